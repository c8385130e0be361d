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

import functools
import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .conditions import Leaf, _candidates, compile_python, evaluate, field_value, leaves, python_expression, resolve
from .fields import UNKNOWN, Field, patient_fields
from .model import Conflict, Pack, Question, Rule

# ---------------------------------------------------------------- contradictions


def find_conflicts(conflicts: Sequence[Conflict], fact: Mapping[str, Any], params: Mapping[str, Any]) -> list[Conflict]:
    """The declared contradictions that hold for this fact, in declaration order: the reference
    interpreter's answer, which the tests hold `ConflictFinder` to."""
    return [c for c in conflicts if evaluate(c.when, dict(fact), dict(params))]


class ConflictFinder:
    """`find_conflicts` as one generated Python function over the flat fact (`conditions.python_expression`;
    the tests hold it equal to the reference interpreter). It runs on every patient before the engine."""

    def __init__(self, conflicts: Sequence[Conflict], params: Mapping[str, Any]) -> None:
        lines = ["def find(f):", "    out = ()"]
        for index, conflict in enumerate(conflicts):
            lines.append(f"    if {python_expression(conflict.when, dict(params))}: out += (C[{index}],)")
        lines.append("    return out")
        self._conflicts = tuple(conflicts)
        self.find: Callable[[Mapping[str, Any]], tuple[Conflict, ...]] = compile_python(
            {"find": "\n".join(lines)}, "conflicts", {"C": self._conflicts})["find"]
        """The contradictions that hold for a fact (the generated function itself: one call less per patient)."""
        # what reading each contradiction's fields as unknown writes into the fact (read_as_unknown)
        fields = patient_fields()
        self._unknown_values = {c.id: _unknown_values(fields[path] for path in c.fields) for c in self._conflicts}
        self._combined: dict[tuple[str, ...], tuple[dict[str, Any], tuple[str, ...]]] = {}

    def read_as_unknown(self, fact: dict[str, Any], unknown: list[str],
                        hits: Sequence[Conflict]) -> tuple[dict[str, Any], list[str]]:
        """`read_as_unknown` for contradictions this finder found, from what each combination of them
        writes into the fact and adds to the unknown paths, worked out once (bounded by MEMO_LIMIT).
        `unknown` must be in schema order without repeats, as `patient.prepare` makes it."""
        key = tuple([conflict.id for conflict in hits])
        combined = self._combined.get(key)
        if combined is None:
            written: dict[str, Any] = {}
            fields: list[str] = []
            for conflict in hits:
                written.update(self._unknown_values[conflict.id])
                fields += [path for path in conflict.fields if path not in fields]
            combined = (written, tuple(fields))
            if len(self._combined) < MEMO_LIMIT:
                self._combined[key] = combined
        values, paths = combined
        added = [path for path in paths if path not in unknown]
        if added:  # in schema order, like the rest
            unknown = sorted(unknown + added, key=_schema_rank().__getitem__)
        else:
            unknown = list(unknown)
        return {**fact, **values}, unknown


def _unknown_values(fields: Iterable[Field]) -> dict[str, Any]:
    """The flat-fact entries that make these fields unknown (an integer is 0 with `__known` false)."""
    out: dict[str, Any] = {}
    for fld in fields:
        if fld.kind == "integer":
            out[fld.key] = 0
            out[fld.key + "__known"] = "false"
        else:
            out[fld.key] = UNKNOWN
    return out


MEMO_LIMIT = 100_000
"""Entries per memo; past it, new value combinations are computed each time (memory stays bounded)."""


def _abstract_key(read: Sequence[Field], tree: Sequence[Leaf], params: Mapping[str, Any]) -> str:
    """Python source of a tuple that tells apart exactly the facts the leaves `tree` can tell apart
    on the fields `read`: a tri-state or enum by its value; a number as "?" when unknown, else
    the signs of (value - t) for every number t a leaf compares it with."""
    parts = []
    for fld in read:
        if fld.kind != "integer":
            parts.append(f"f[{fld.key!r}]")
            continue
        points: set[Any] = set()
        for leaf in tree:
            if leaf.field.path == fld.path and leaf.op != "is":
                operand = resolve(leaf.operand, dict(params))
                points.update(operand if isinstance(operand, tuple) else (operand,))
        value = f"f[{fld.key!r}]"
        signs = "".join(f"({value} > {t!r}) - ({value} < {t!r}), " for t in sorted(points))
        parts.append(f"('?' if f[{fld.key + '__known'!r}] == 'false' else ({signs}))")
    return "(" + "".join(part + ", " for part in parts) + ")"


def read_as_unknown(fact: dict[str, Any], unknown: list[str], hits: Iterable[Conflict]) -> tuple[dict[str, Any], list[str]]:
    """A copy of the fact with every conflicting field unknown, and the unknown paths (schema order):
    the plain form of `ConflictFinder.read_as_unknown`, which the tests hold to it."""
    fields = patient_fields()
    fact = dict(fact)
    paths = set(unknown)
    for conflict in hits:
        fact.update(_unknown_values(fields[path] for path in conflict.fields))
        paths.update(conflict.fields)
    return fact, sorted(paths, key=_schema_rank().__getitem__)


@functools.cache
def _schema_rank() -> dict[str, int]:
    return {path: rank for rank, path in enumerate(patient_fields())}


# ---------------------------------------------------------------- open questions


class QuestionFinder:
    """Which declared questions are open for a fact; memoised on what the rules can tell apart.

    `pairs` lists every (question, rule) in rule-file order; `open` answers with their indexes,
    a small hashable value the result assembler can key its own memo on. Which rules may have an
    open question (not fired, some asked field unknown) is one generated function. The memo keys
    are generated too: a tri-state or enum field by its value, a number by whether it is known
    and on which side of each number the rules compare it with (`sign(value - threshold)`). Two
    facts with the same key make every leaf of these rules equally true, so they have the same
    open questions; and the keys are finitely many, so the memos fill up and stop growing.
    """

    def __init__(self, rules: Iterable[Rule], params: Mapping[str, Any]) -> None:
        self._params = dict(params)
        fields = patient_fields()
        pairs: list[tuple[Question, Rule]] = []
        self._asking: list[tuple[Rule, tuple[Field, ...], tuple[Field, ...], dict[str, list[Any]],
                                 tuple[tuple[str, int], ...]]] = []
        lines = ["def candidates(f, fired):", "    out = []"]
        predicates: dict[str, str] = {}
        for rule in rules:
            if not rule.questions:
                continue
            tree = leaves(rule.when)
            read = tuple({leaf.field.path: leaf.field for leaf in tree}.values())
            asked = tuple(fields[q.field] for q in rule.questions)
            candidates = {f.path: _candidates(f, tree, self._params) for f in asked}
            indexes = []
            for question in rule.questions:
                indexes.append((question.field, len(pairs)))
                pairs.append((question, rule))
            # an asked field is unknown when its flat value (an integer's `__known` flag) says so
            unknown = " or ".join(f"f[{f.key + '__known'!r}] == 'false'" if f.kind == "integer" else
                                  f"f[{f.key!r}] == {UNKNOWN!r}" for f in asked)
            lines.append(f"    if {rule.id!r} not in fired and ({unknown}): out.append({len(self._asking)})")
            number = len(self._asking)
            self._asking.append((rule, read, asked, candidates, tuple(indexes)))
            predicates[f"rule_{number}"] = f"def rule_{number}(f):\n    return {python_expression(rule.when, self._params)}"
            predicates[f"key_{number}"] = f"def key_{number}(f):\n    return {_abstract_key(read, tree, self._params)}"
        every_read = tuple({f.path: f for _, read, *_ in self._asking for f in read}.values())
        every_leaf = [leaf for rule, *_ in self._asking for leaf in leaves(rule.when)]
        # the candidate rules, with the memo key over every field any asking rule reads (None: no candidate)
        lines.append(f"    return (tuple(out), {_abstract_key(every_read, every_leaf, self._params)}) if out else None")
        self._candidate_rules = compile_python({"candidates": "\n".join(lines)}, "questions")["candidates"]
        # per asking rule, compiled on its first memo miss (a one-patient run compiles few of them):
        # its memo key, and its condition (for the search over the answers not given)
        self._sources = predicates
        self._compiled: dict[int, tuple[Any, Any]] = {}
        self.pairs: tuple[tuple[Question, Rule], ...] = tuple(pairs)
        self._memo: dict[tuple[Any, ...], tuple[str, ...]] = {}  # per rule and the values it reads
        self._answers: dict[tuple[Any, ...], tuple[int, ...]] = {}

    def _compile(self, position: int) -> tuple[Any, Any]:
        sources = {name: self._sources[name] for name in (f"key_{position}", f"rule_{position}")}
        compiled = compile_python(sources, "questions")
        functions = self._compiled[position] = (compiled[f"key_{position}"], compiled[f"rule_{position}"])
        return functions

    def open(self, fact: Mapping[str, Any], fired: set[str]) -> tuple[int, ...]:
        """The indexes (into `pairs`) of every open question, in rule-file order."""
        whole = self._candidate_rules(fact, fired)
        if whole is None:
            return ()
        answer = self._answers.get(whole)  # per candidate rules and what they can tell apart: most patients stop here
        if answer is not None:
            return answer
        out: list[int] = []
        for position in whole[0]:
            rule, read, asked, candidates, indexes = self._asking[position]
            key_of, holds = self._compiled.get(position) or self._compile(position)
            key = (rule.id, key_of(fact))
            paths = self._memo.get(key)
            if paths is None:
                values = tuple(field_value(fact, f) for f in read)  # type: ignore[arg-type]
                paths = self._open_fields(holds, read, asked, candidates, values)
                if len(self._memo) < MEMO_LIMIT:
                    self._memo[key] = paths
            out.extend(index for path, index in indexes if path in paths)
        answer = tuple(out)
        if len(self._answers) < MEMO_LIMIT:
            self._answers[whole] = answer
        return answer

    @staticmethod
    def _open_fields(holds: Any, read: tuple[Field, ...], asked: tuple[Field, ...],
                     candidates: dict[str, list[Any]], values: tuple[Any, ...]) -> tuple[str, ...]:
        base = dict(zip((f.path for f in read), values))
        free = [f for f in asked if base[f.path] == UNKNOWN]
        if not free:
            return ()
        matters: set[str] = set()
        for combo in itertools.product(*(candidates[f.path] for f in free)):
            trial = dict(base)
            trial.update(zip((f.path for f in free), combo))
            if not _holds(holds, read, trial):
                continue
            for f, value in zip(free, combo):
                if value != UNKNOWN and f.path not in matters:
                    without = dict(trial)
                    without[f.path] = UNKNOWN
                    if not _holds(holds, read, without):
                        matters.add(f.path)
        return tuple(f.path for f in free if f.path in matters)


def _holds(holds: Any, read: tuple[Field, ...], values: Mapping[str, Any]) -> bool:
    """A compiled rule condition on field values given by path (UNKNOWN for an unknown number too)."""
    fact: dict[str, Any] = {}
    for f in read:
        value = values[f.path]
        if f.kind == "integer":
            fact[f.key] = 0 if value == UNKNOWN else value
            fact[f.key + "__known"] = "false" if value == UNKNOWN else "true"
        else:
            fact[f.key] = value
    return bool(holds(fact))


# ---------------------------------------------------------------- review status


def review_status(packs: Iterable[Pack]) -> dict[str, Any]:
    """`signed-off` when every pack has a clinical reviewer's `reviewed` date, else `pending` with the pack ids."""
    pending = [p.id for p in packs if not (p.metadata.get("clinical_reviewer") or {}).get("reviewed")]
    return {"status": "pending" if pending else "signed-off", "pending_packs": pending}
