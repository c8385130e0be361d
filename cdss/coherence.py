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
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .conditions import _candidates, evaluate, field_value, leaves
from .fields import UNKNOWN, Field, patient_fields
from .model import Conflict, Pack, Question, Rule

# ---------------------------------------------------------------- contradictions


def find_conflicts(conflicts: Sequence[Conflict], fact: Mapping[str, Any], params: Mapping[str, Any]) -> list[Conflict]:
    """The declared contradictions that hold for this fact, in declaration order."""
    return [c for c in conflicts if evaluate(c.when, dict(fact), dict(params))]


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
    """Which declared questions are open for a fact; results memoised per rule and per values it reads."""

    def __init__(self, rules: Iterable[Rule], params: Mapping[str, Any]) -> None:
        self._params = dict(params)
        fields = patient_fields()
        self._asking: list[tuple[Rule, tuple[Field, ...], tuple[Field, ...], dict[str, list[Any]]]] = []
        for rule in rules:
            if not rule.questions:
                continue
            tree = leaves(rule.when)
            read = tuple({leaf.field.path: leaf.field for leaf in tree}.values())
            asked = tuple(fields[q.field] for q in rule.questions)
            candidates = {f.path: _candidates(f, tree, self._params) for f in asked}
            self._asking.append((rule, read, asked, candidates))
        self._memo: dict[tuple[Any, ...], tuple[str, ...]] = {}

    def open(self, fact: Mapping[str, Any], fired: set[str]) -> list[tuple[Question, Rule]]:
        """(question, rule) for every open question, in rule-file order."""
        out: list[tuple[Question, Rule]] = []
        for rule, read, asked, candidates in self._asking:
            if rule.id in fired:
                continue
            values = tuple(field_value(fact, f) for f in read)  # type: ignore[arg-type]
            key = (rule.id, values)
            paths = self._memo.get(key)
            if paths is None:
                paths = self._open_fields(rule, read, asked, candidates, values)
                if len(self._memo) < 100_000:
                    self._memo[key] = paths
            out.extend((q, rule) for q in rule.questions if q.field in paths)
        return out

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
