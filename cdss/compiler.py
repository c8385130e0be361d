"""Compile checked rules into a durable-rules ruleset definition (plain JSON).

Every rule becomes `{"all": [{"m": {"$and": [{"kind": "patient"}, <condition>]}}]}`. A
catch-all rule on the wrapper's `kind` field makes every fact handled: durable-rules 2.0.28
segfaults on `delete_state` after an unhandled fact (DEPENDENCY-FACTS.md).
"""

from __future__ import annotations

from typing import Any, Iterable

from .conditions import FALSE, TRUE, to_durable
from .model import Rule

CATCH_ALL = "_handled"  # not a valid rule id (ids are kebab-case), so it never collides
FACT_KIND = {"kind": "patient"}


def compile_rules(rules: Iterable[Rule], params: dict[str, Any]) -> dict[str, Any]:
    """The durable-rules definition for these rules under these parameter values.

    Rules whose condition can never hold are left out (the engine would reject an empty
    `$or`); the result assembly still knows them, so they appear in traces as not fired.
    """
    definition: dict[str, Any] = {}
    for rule in rules:
        expression = to_durable(rule.when, params)
        if expression == FALSE:
            continue
        match = FACT_KIND if expression == TRUE else {"$and": [FACT_KIND, expression]}
        definition[rule.id] = {"all": [{"m": match}]}
    definition[CATCH_ALL] = {"all": [{"m": {"$ex": {"kind": 1}}}]}
    return definition
