"""Clinical coherence (issue 17): contradictory answers, open questions, and the rule set's review status.

All three are driven by rule-file data, never by field names in Python:
- `conflicts:` in ruleset.yaml name contradictions; their fields are read as unknown before the
  engine sees the fact (an answer we cannot trust is not used silently);
- `questions:` on a rule name the fields whose unknown answer could make it fire; a question is
  open when the rule did not fire and some answer to its unknown fields would make it fire, with
  that field's answer mattering;
- a pack is signed off when its `clinical_reviewer.reviewed` date is set.
"""

from __future__ import annotations

import itertools
import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .conditions import _candidates, evaluate, field_value, leaves
from .fields import UNKNOWN, Field, patient_fields
from .model import Conflict, Pack, Question, Rule

# ---------------------------------------------------------------- contradictions


def find_conflicts(conflicts: Sequence[Conflict], fact: Mapping[str, Any], params: Mapping[str, Any]) -> list[Conflict]:
    """The declared contradictions that hold for this fact, in declaration order (the reference)."""
    return [c for c in conflicts if evaluate(c.when, dict(fact), dict(params))]


class ConflictFinder:
    """`find_conflicts`, memoised per contradiction on the fact values it reads.

    Each contradiction reads two or three fields, so a handful of value combinations recur across
    a population: each is evaluated once by the reference interpreter, then looked up.
    """

    def __init__(self, conflicts: Sequence[Conflict], params: Mapping[str, Any]) -> None:
        self._params = dict(params)
        fields = patient_fields()
        self._checks = tuple((c, _getter(fact_keys(fields[leaf.field.path] for leaf in leaves(c.when))), {})
                             for c in conflicts)

    def __call__(self, fact: Mapping[str, Any]) -> tuple[Conflict, ...]:
        hits: list[Conflict] = []
        for conflict, values_of, memo in self._checks:
            key = values_of(fact)
            holds = memo.get(key)
            if holds is None:
                holds = evaluate(conflict.when, dict(fact), self._params)
                if len(memo) < MEMO_LIMIT:
                    memo[key] = holds
            if holds:
                hits.append(conflict)
        return tuple(hits)


MEMO_LIMIT = 100_000
"""Entries per memo; past it, new value combinations are computed each time (memory stays bounded)."""


def fact_keys(fields: Iterable[Field]) -> tuple[str, ...]:
    """The flat-fact keys holding these fields' values (an integer has two: value and `__known`), deduplicated."""
    keys: dict[str, None] = {}
    for fld in fields:
        keys[fld.key] = None
        if fld.kind == "integer":
            keys[fld.key + "__known"] = None
    return tuple(keys)


def _getter(keys: tuple[str, ...]) -> Any:
    """A function from a fact to the tuple of its values at `keys` (C speed, always a tuple)."""
    if not keys:
        return lambda fact: ()
    if len(keys) == 1:
        single = operator.itemgetter(keys[0])
        return lambda fact: (single(fact),)
    return operator.itemgetter(*keys)


def read_as_unknown(fact: dict[str, Any], unknown: list[str], hits: Iterable[Conflict]) -> tuple[dict[str, Any], list[str]]:
    """A copy of the fact with every conflicting field unknown, and the unknown paths (schema order)."""
    fields = patient_fields()
    fact = dict(fact)
    paths = set(unknown)
    for conflict in hits:
        for path in conflict.fields:
            fld = fields[path]
            if fld.kind == "integer":
                fact[fld.key] = 0
                fact[fld.key + "__known"] = "false"
            else:
                fact[fld.key] = UNKNOWN
            paths.add(path)
    return fact, [path for path in fields if path in paths]


def encode_fact(fact: Mapping[str, Any]) -> str:
    """The fact as the engine's JSON head (closing brace left off), as `patient.prepare` makes it."""
    return json.dumps(dict(fact, id="patient", kind="patient"))[:-1]


# ---------------------------------------------------------------- open questions


class QuestionFinder:
    """Which declared questions are open for a fact; memoised per rule and per values it reads.

    `pairs` lists every (question, rule) in rule-file order; `open` answers with their indexes,
    a small hashable value the result assembler can key its own memo on.
    """

    def __init__(self, rules: Iterable[Rule], params: Mapping[str, Any]) -> None:
        self._params = dict(params)
        fields = patient_fields()
        pairs: list[tuple[Question, Rule]] = []
        self._asking: list[tuple[Rule, tuple[Field, ...], tuple[Field, ...], dict[str, list[Any]], Any,
                                 tuple[tuple[str, str], ...], tuple[tuple[str, int], ...]]] = []
        for rule in rules:
            if not rule.questions:
                continue
            tree = leaves(rule.when)
            read = tuple({leaf.field.path: leaf.field for leaf in tree}.values())
            asked = tuple(fields[q.field] for q in rule.questions)
            candidates = {f.path: _candidates(f, tree, self._params) for f in asked}
            # an asked field is unknown when its flat value (or an integer's `__known` flag) says so
            markers = tuple((f.key + "__known", "false") if f.kind == "integer" else (f.key, UNKNOWN) for f in asked)
            indexes = []
            for question in rule.questions:
                indexes.append((question.field, len(pairs)))
                pairs.append((question, rule))
            self._asking.append((rule, read, asked, candidates, _getter(fact_keys(read)), markers, tuple(indexes)))
        self.pairs: tuple[tuple[Question, Rule], ...] = tuple(pairs)
        self._memo: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def open(self, fact: Mapping[str, Any], fired: set[str]) -> tuple[int, ...]:
        """The indexes (into `pairs`) of every open question, in rule-file order."""
        out: list[int] = []
        for rule, read, asked, candidates, values_of, markers, indexes in self._asking:
            if rule.id in fired:
                continue
            for key, marker in markers:
                if fact[key] == marker:
                    break
            else:
                continue  # every asked field is answered: nothing to ask for this rule
            key = (rule.id, values_of(fact))
            paths = self._memo.get(key)
            if paths is None:
                values = tuple(field_value(fact, f) for f in read)  # type: ignore[arg-type]
                paths = self._open_fields(rule, read, asked, candidates, values)
                if len(self._memo) < MEMO_LIMIT:
                    self._memo[key] = paths
            out.extend(index for path, index in indexes if path in paths)
        return tuple(out)

    def _open_fields(self, rule: Rule, read: tuple[Field, ...], asked: tuple[Field, ...],
                     candidates: dict[str, list[Any]], values: tuple[Any, ...]) -> tuple[str, ...]:
        base = dict(zip((f.path for f in read), values))
        free = [f for f in asked if base[f.path] == UNKNOWN]
        if not free:
            return ()
        matters: set[str] = set()
        for combo in itertools.product(*(candidates[f.path] for f in free)):
            trial = dict(base)
            trial.update(zip((f.path for f in free), combo))
            if not self._holds(rule, read, trial):
                continue
            for f, value in zip(free, combo):
                if value != UNKNOWN and f.path not in matters:
                    without = dict(trial)
                    without[f.path] = UNKNOWN
                    if not self._holds(rule, read, without):
                        matters.add(f.path)
        return tuple(f.path for f in free if f.path in matters)

    def _holds(self, rule: Rule, read: tuple[Field, ...], values: Mapping[str, Any]) -> bool:
        fact: dict[str, Any] = {}
        for f in read:
            value = values[f.path]
            if f.kind == "integer":
                fact[f.key] = 0 if value == UNKNOWN else value
                fact[f.key + "__known"] = "false" if value == UNKNOWN else "true"
            else:
                fact[f.key] = value
        return evaluate(rule.when, fact, self._params)


# ---------------------------------------------------------------- review status


def review_status(packs: Iterable[Pack]) -> dict[str, Any]:
    """`signed-off` when every pack has a clinical reviewer's `reviewed` date, else `pending` with the pack ids."""
    pending = [p.id for p in packs if not (p.metadata.get("clinical_reviewer") or {}).get("reviewed")]
    return {"status": "pending" if pending else "signed-off", "pending_packs": pending}
