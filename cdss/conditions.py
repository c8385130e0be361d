"""The condition language: parse a `when` tree, evaluate it in Python, compile it for durable-rules.

One tree, two back ends. durable-rules executes the rules; the Python evaluator explains
them (the `trace`) and is the oracle the tests compare durable-rules against. Negation is
pushed down to the leaves before compiling, because durable-rules rejects `$not`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from .fields import UNKNOWN, Field

COMPARISONS = {"gte": "$gte", "gt": "$gt", "lte": "$lte", "lt": "$lt"}
NEGATED_COMPARISON = {"gte": "lt", "gt": "lte", "lte": "gt", "lt": "gte"}
OPERATORS = ("is", "equals", "in", *COMPARISONS)


@dataclass(frozen=True)
class ParamRef:
    """A reference to a declared parameter, resolved when the rule set is compiled."""

    name: str


@dataclass(frozen=True)
class Leaf:
    """`field OP operand`: one comparison of a patient field."""

    field: Field
    op: str
    operand: Any  # literal, tuple for `in`, or ParamRef


@dataclass(frozen=True)
class All:
    children: tuple[Condition, ...]


@dataclass(frozen=True)
class AnyOf:
    children: tuple[Condition, ...]


@dataclass(frozen=True)
class Not:
    child: Condition


Condition = Union[Leaf, All, AnyOf, Not]


def leaves(condition: Condition) -> list[Leaf]:
    """Every leaf of a tree, left to right."""
    if isinstance(condition, Leaf):
        return [condition]
    if isinstance(condition, Not):
        return leaves(condition.child)
    return [leaf for child in condition.children for leaf in leaves(child)]


def resolve(operand: Any, params: dict[str, Any]) -> Any:
    """The literal value of an operand under the parameters in force."""
    return params[operand.name] if isinstance(operand, ParamRef) else operand


# ---------------------------------------------------------------- Python evaluation


def leaf_holds(leaf: Leaf, value: Any, params: dict[str, Any]) -> bool:
    """Does a leaf hold for one flattened field value? (`value` is as in the flat fact.)"""
    operand = resolve(leaf.operand, params)
    known = value != UNKNOWN
    if leaf.op == "is":
        if operand == "unknown":
            return not known
        if operand == "known":
            return known
        return value == ("true" if operand else "false")
    if not known:
        return False
    if leaf.op == "equals":
        return bool(value == operand)
    if leaf.op == "in":
        return value in operand
    if leaf.op == "gte":
        return bool(value >= operand)
    if leaf.op == "gt":
        return bool(value > operand)
    if leaf.op == "lte":
        return bool(value <= operand)
    if leaf.op == "lt":
        return bool(value < operand)
    raise ValueError(f"unknown operator {leaf.op}")


def field_value(fact: dict[str, Any], field: Field) -> Any:
    """The value of a field as the rules see it: UNKNOWN for an unknown integer too."""
    if field.kind == "integer" and fact[field.key + "__known"] == "false":
        return UNKNOWN
    return fact[field.key]


def evaluate(condition: Condition, fact: dict[str, Any], params: dict[str, Any],
             trace: list[dict[str, Any]] | None = None) -> bool:
    """Evaluate a tree on a flat fact; append every leaf's outcome to `trace` when given."""
    if isinstance(condition, Leaf):
        value = field_value(fact, condition.field)
        held = leaf_holds(condition, value, params)
        if trace is not None:
            operand = resolve(condition.operand, params)
            entry: dict[str, Any] = {"field": condition.field.path, "op": condition.op,
                                     "value": list(operand) if isinstance(operand, tuple) else operand}
            if isinstance(condition.operand, ParamRef):
                entry["param"] = condition.operand.name
            entry["saw"] = _as_json(value)
            entry["result"] = held
            trace.append(entry)
        return held
    if isinstance(condition, Not):
        return not evaluate(condition.child, fact, params, trace)
    results = [evaluate(child, fact, params, trace) for child in condition.children]  # no short cut: full trace
    return all(results) if isinstance(condition, All) else any(results)


def _as_json(value: Any) -> Any:
    if value == "true":
        return True
    if value == "false":
        return False
    if value == UNKNOWN:
        return None
    return value


# ---------------------------------------------------------------- Python compilation


def python_expression(condition: Condition, params: dict[str, Any], fact: str = "f") -> str:
    """Python source of an expression equal to `evaluate(condition, <fact>, params)` (a third back end,
    for the checks that run before and after the engine on every patient: contradictions, open
    questions). Only literals from the rule file (by `repr`) and schema-derived keys go in."""
    if isinstance(condition, Not):
        return f"(not {python_expression(condition.child, params, fact)})"
    if isinstance(condition, (All, AnyOf)):
        joiner = " and " if isinstance(condition, All) else " or "
        return "(" + joiner.join(python_expression(child, params, fact) for child in condition.children) + ")"
    field, op, operand = condition.field, condition.op, resolve(condition.operand, params)
    value = f"{fact}[{field.key!r}]"
    if field.kind == "integer":
        known = f"{fact}[{field.key + '__known'!r}] == 'true'"
    else:
        known = f"{value} != {UNKNOWN!r}"
    if op == "is":
        if operand == "unknown":
            return f"(not {known})"
        if operand == "known":
            return f"({known})"
        if field.kind == "integer":
            return "False"  # an integer is never the text "true"/"false" (leaf_holds compares with it)
        return f"({value} == {'true' if operand else 'false'!r})"
    test = {"equals": "==", "in": "in", "gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}[op]
    literal = tuple(operand) if op == "in" else operand
    return f"({known} and {value} {test} {literal!r})"


def compile_python(functions: dict[str, str], label: str, constants: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Compile generated function sources (name -> source) into callables; `label` names them in tracebacks,
    `constants` are global names the sources may read."""
    namespace: dict[str, Any] = dict(constants or {})
    exec(compile("\n".join(functions.values()), f"<cdss {label}>", "exec"), namespace)  # noqa: S102 - generated from checked rule data
    return {name: namespace[name] for name in functions}


# ---------------------------------------------------------------- durable-rules compilation

TRUE: dict[str, Any] = {"$true": True}  # internal markers, simplified away before registration
FALSE: dict[str, Any] = {"$false": True}


def to_durable(condition: Condition, params: dict[str, Any]) -> dict[str, Any]:
    """A durable-rules expression equivalent to the tree (TRUE/FALSE markers when constant)."""
    return _compile(condition, params, negated=False)


def _compile(condition: Condition, params: dict[str, Any], negated: bool) -> dict[str, Any]:
    if isinstance(condition, Not):
        return _compile(condition.child, params, not negated)
    if isinstance(condition, Leaf):
        return _compile_leaf(condition, params, negated)
    conjunctive = isinstance(condition, All) != negated  # De Morgan under negation
    parts = [_compile(child, params, negated) for child in condition.children]
    return _combine("$and" if conjunctive else "$or", parts)


def _combine(op: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    absorbing, neutral = (FALSE, TRUE) if op == "$and" else (TRUE, FALSE)
    if any(part == absorbing for part in parts):
        return absorbing
    kept: list[dict[str, Any]] = []
    for part in parts:
        if part == neutral:
            continue
        kept.extend(part[op] if len(part) == 1 and op in part else [part])
    if not kept:
        return neutral
    return kept[0] if len(kept) == 1 else {op: kept}


def _compile_leaf(leaf: Leaf, params: dict[str, Any], negated: bool) -> dict[str, Any]:
    field = leaf.field
    if field.kind != "integer":
        # finite domain: enumerate the values for which the leaf holds (or fails, negated)
        chosen = [v for v in field.domain if leaf_holds(leaf, v, params) != negated]
        return _combine("$or", [{field.key: v} for v in chosen])
    known_flag = field.key + "__known"
    is_known = {known_flag: "true"}
    is_unknown = {known_flag: "false"}
    operand = resolve(leaf.operand, params)
    if leaf.op == "is":
        wants_known = operand == "known"
        return is_known if wants_known != negated else is_unknown
    if leaf.op in COMPARISONS:
        op = NEGATED_COMPARISON[leaf.op] if negated else leaf.op
        test = _combine("$and", [is_known, {COMPARISONS[op]: {field.key: operand}}])
    elif leaf.op == "equals":
        test = _combine("$and", [is_known, {"$neq": {field.key: operand}} if negated else {field.key: operand}])
    elif leaf.op == "in":
        values = list(operand)
        if negated:
            test = _combine("$and", [is_known, *({"$neq": {field.key: v}} for v in values)])
        else:
            test = _combine("$and", [is_known, _combine("$or", [{field.key: v} for v in values])])
    else:
        raise ValueError(f"unknown operator {leaf.op}")
    return _combine("$or", [is_unknown, test]) if negated else test


# ---------------------------------------------------------------- static analysis


def _candidates(field: Field, tree_leaves: list[Leaf], params: dict[str, Any]) -> list[Any]:
    if field.kind != "integer":
        return list(field.domain)
    points = {0}
    for leaf in tree_leaves:
        if leaf.field == field and leaf.op not in ("is",):
            value = resolve(leaf.operand, params)
            for v in value if isinstance(value, tuple) else (value,):
                if isinstance(v, (int, float)):
                    points.update({int(v) - 1, int(v), int(v) + 1})
    return [UNKNOWN, *sorted(points)]


def outcomes(condition: Condition, params: dict[str, Any], limit: int = 200_000) -> set[bool] | None:
    """Every truth value the condition can take over all patients (None if too many to enumerate).

    Exact: finite fields take every value, integers every value that can change a comparison.
    """
    import itertools

    tree_leaves = leaves(condition)
    fields = list({leaf.field.path: leaf.field for leaf in tree_leaves}.values())
    choices = [_candidates(f, tree_leaves, params) for f in fields]
    total = 1
    for c in choices:
        total *= len(c)
    if total > limit:
        return None
    seen: set[bool] = set()
    for combo in itertools.product(*choices):
        fact: dict[str, Any] = {}
        for f, value in zip(fields, combo):
            if f.kind == "integer":
                fact[f.key] = 0 if value == UNKNOWN else value
                fact[f.key + "__known"] = "false" if value == UNKNOWN else "true"
            else:
                fact[f.key] = value
        seen.add(evaluate(condition, fact, params))
        if len(seen) == 2:
            break
    return seen
