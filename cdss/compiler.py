"""Compile checked rules into a durable-rules ruleset definition (plain JSON), within the engine's limits.

Every rule becomes `{"all": [{"m": {"$and": [{"kind": "patient"}, <condition>]}}]}`. A
catch-all rule on the wrapper's `kind` field makes every fact handled: durable-rules 2.0.28
segfaults on `delete_state` after an unhandled fact (DEPENDENCY-FACTS.md).

durable-rules' C engine has fixed limits that it checks late (at registration or, worse, per
fact) or not at all (a segfault). `limit_problems` checks them on the compiled form, so the
loader refuses a rule set that the engine could not run (docs/RULE-LANGUAGE.md, "Engine limits").
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .conditions import FALSE, TRUE, to_durable
from .model import Rule

CATCH_ALL = "_handled"  # not a valid rule id (ids are kebab-case), so it never collides
FACT_KIND = {"kind": "patient"}

# ---------------------------------------------------------------- durable-rules 2.0.28 limits (src/rules/*.h)
MAX_RULES = 255
"""BETA_LIST_LENGTH (256) rules may hang off one alpha node, but a full list has no 0 terminator
and the engine reads past it (measured: 256 rules firing on one fact segfault); the catch-all
hangs elsewhere, so 255 rules of ours always fit."""
MAX_COMBINATORS = 15
"""MAX_SEQUENCE_EXPRESSIONS (32) per rule, reached at 32: every `$and`/`$or` of the compiled
rule (the fact-kind wrapper included) takes two slots (operator and end), so at most 15."""
MAX_ALPHA_STACK = 64
"""MAX_STACK_SIZE in events.c: alpha nodes waiting to be visited while one fact is matched;
one more is `Could not assert fact, error code: 303` at evaluate time, for that patient only."""
MAX_FORWARDS = 127
"""NEXT_LIST_LENGTH (128): `any` branches ending on the same alpha node (refused at registration)."""
ENGINE_INTEGER = 2 ** 53
"""Operands are written as integers within +-2**53 (the engine reads integers with atol, and
doubles only with a '.' before any exponent; `1e20` is a parse error, error code 203)."""


def compile_rules(rules: Iterable[Rule], params: dict[str, Any]) -> dict[str, Any]:
    """The durable-rules definition for these rules under these parameter values.

    Rules whose condition can never hold are left out (the engine would reject an empty
    `$or`); the result assembly still knows them, so they appear in traces as not fired.
    """
    definition: dict[str, Any] = {}
    for rule in rules:
        match = compile_rule(rule, params)
        if match is not None:
            definition[rule.id] = {"all": [{"m": match}]}
    definition[CATCH_ALL] = {"all": [{"m": {"$ex": {"kind": 1}}}]}
    return definition


def compile_rule(rule: Rule, params: dict[str, Any]) -> dict[str, Any] | None:
    """The `m` expression of one rule (None when it can never hold), numbers written for the engine."""
    expression = to_durable(rule.when, params)
    if expression == FALSE:
        return None
    match = FACT_KIND if expression == TRUE else {"$and": [FACT_KIND, expression]}
    return engine_numbers(match)


# ---------------------------------------------------------------- numbers the engine reads

_ROUND = {"$gte": math.ceil, "$lt": math.ceil, "$gt": math.floor, "$lte": math.floor}


def engine_numbers(expression: Any, op: str | None = None) -> Any:
    """The expression with every number written so that durable-rules reads it exactly.

    Patient numbers are integers, so a comparison with a fraction is the comparison with the
    next integer on the right side (`gte 2.5` is `gte 3`), and equality with a fraction never
    holds (written as 0.5, which prints without an exponent). Integers are clamped to
    +-2**53, far beyond any schema bound, where json.dumps and the engine's atol agree.
    """
    if isinstance(expression, dict):
        return {key: engine_numbers(value, key if key.startswith("$") else op) for key, value in expression.items()}
    if isinstance(expression, list):
        return [engine_numbers(item, op) for item in expression]
    if isinstance(expression, bool) or not isinstance(expression, (int, float)):
        return expression
    value = expression
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"a rule operand is {value}; the loader refuses non-finite numbers")
        if value.is_integer():
            value = int(value)
        elif op in _ROUND:
            value = _ROUND[op](value)
        else:  # equality with a fraction: false for every integer, whatever fraction is written
            return 0.5
    return max(-ENGINE_INTEGER, min(ENGINE_INTEGER, value))


# ---------------------------------------------------------------- limits


class _Alpha:
    """One node of our model of durable-rules' alpha network (rete.c: createAlpha, findAlpha)."""

    __slots__ = ("betas", "children", "forwards")

    def __init__(self) -> None:
        self.children: dict[tuple[str, str, str], _Alpha] = {}  # (property, operator, value) -> node
        self.forwards: list[_Alpha] = []
        self.betas = 0


def _leaf_key(leaf: dict[str, Any]) -> tuple[str, str, str]:
    import json

    (op, body), = leaf.items()
    if not op.startswith("$"):
        return op, "$eq", json.dumps(body)
    (prop, value), = body.items()
    return prop, op, json.dumps(value)


def _link(expression: dict[str, Any], parent: _Alpha) -> _Alpha:
    """Add an expression below `parent` as durable does; return the node its rule continues from."""
    if "$and" in expression:
        node = parent
        for child in expression["$and"]:
            node = _link(child, node)
        return node
    if "$or" in expression:
        forward = _Alpha()
        for child in expression["$or"]:
            _link(child, parent).forwards.append(forward)
        return forward
    return parent.children.setdefault(_leaf_key(expression), _Alpha())


def _stack_bound(root: _Alpha) -> int:
    """An upper bound of durable's alpha stack (events.c handleAlpha) over every possible fact.

    Visiting a node pushes every matching child and every forward node; equality children
    on one property match at most one at a time. Depth-first, a child's subtree runs while
    its siblings wait below it: S(n) = max(k, k - 1 + max S(child)).
    """
    memo: dict[int, int] = {}
    todo: list[tuple[_Alpha, bool]] = [(root, False)]
    while todo:  # iterative post-order: chains of hundreds of nodes are legal
        node, expanded = todo.pop()
        if id(node) in memo:
            continue
        kids = (*node.children.values(), *node.forwards)
        if not expanded:
            todo.append((node, True))
            todo.extend((kid, False) for kid in kids if id(kid) not in memo)
            continue
        equal_props = {prop for prop, op, _ in node.children if op == "$eq"}
        others = sum(1 for _, op, _ in node.children if op != "$eq")
        k = len(equal_props) + others + len(node.forwards)
        memo[id(node)] = max(k, k - 1 + max(memo[id(kid)] for kid in kids)) if kids else 0
    return memo[id(root)]


def _combinators(expression: Any) -> int:
    if isinstance(expression, dict):
        own = 1 if ("$and" in expression or "$or" in expression) else 0
        return own + sum(_combinators(value) for value in expression.values())
    if isinstance(expression, list):
        return sum(_combinators(item) for item in expression)
    return 0


def limit_problems(rules: Iterable[Rule], params: dict[str, Any]) -> list[tuple[Rule | None, str]]:
    """Every engine limit the compiled rules exceed, as (rule or None, message naming the limit)."""
    problems: list[tuple[Rule | None, str]] = []
    rules = list(rules)
    if len(rules) > MAX_RULES:
        problems.append((rules[MAX_RULES], f"rule set has {len(rules)} active rules; the engine (durable-rules) "
                         f"runs at most {MAX_RULES} (limit MAX_RULES): split the rule set"))
    compiled: list[tuple[Rule, dict[str, Any]]] = []
    for rule in rules:
        match = compile_rule(rule, params)
        if match is None:
            continue
        used = _combinators(match)
        if used > MAX_COMBINATORS:
            problems.append((rule, f"condition compiles to {used} all/any groups for the engine (the fact-kind "
                             f"wrapper and the known/unknown split of number fields included); durable-rules takes at most "
                             f"{MAX_COMBINATORS} per rule (limit MAX_SEQUENCE_EXPRESSIONS): split the rule into "
                             "several rules or use 'in' for a list of values"))
            continue
        compiled.append((rule, match))
    if _network_problem(compiled) is None:
        return problems
    for end in range(1, len(compiled) + 1):  # find the first rule that crosses a limit, to name it
        problem = _network_problem(compiled[:end])
        if problem is not None:
            problems.append((compiled[end - 1][0], problem))
            break
    return problems


def _network_problem(compiled: list[tuple[Rule, dict[str, Any]]]) -> str | None:
    """Why the alpha network of these rules (plus the catch-all) exceeds an engine limit, or None."""
    root = _Alpha()
    root.children[("kind", "$ex", "1")] = _Alpha()  # the catch-all
    for _, match in compiled:
        _link(match, root).betas += 1
    widest = max((len(n.forwards) for n in _walk(root)), default=0)
    if widest > MAX_FORWARDS:
        return (f"too many 'any' branches end on the same condition ({widest}); durable-rules takes at most "
                f"{MAX_FORWARDS} (limit NEXT_LIST_LENGTH)")
    stack = _stack_bound(root)
    if stack > MAX_ALPHA_STACK:
        return (f"with this rule, one patient can make the engine hold up to {stack} pending conditions; "
                f"durable-rules holds at most {MAX_ALPHA_STACK} (limit MAX_STACK_SIZE) and would fail on that "
                "patient: use fewer distinct thresholds, or fewer alternatives directly after the same condition")
    return None


def _walk(root: _Alpha) -> list[_Alpha]:
    seen: dict[int, _Alpha] = {}
    todo = [root]
    while todo:
        node = todo.pop()
        if id(node) in seen:
            continue
        seen[id(node)] = node
        todo.extend(node.children.values())
        todo.extend(node.forwards)
    return list(seen.values())
