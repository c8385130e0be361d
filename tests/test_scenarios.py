"""Run every scenario file in examples/scenarios against the bundled rules (tests as data)."""

from __future__ import annotations

import pytest

import cdss
from cdss.scenarios import Scenario, check, load_scenarios
from tests.conftest import ROOT

SCENARIOS = load_scenarios(ROOT / "examples" / "scenarios")


def test_there_are_scenarios_and_example_patients() -> None:
    assert len(SCENARIOS) >= 15
    assert len(list((ROOT / "examples" / "patients").glob("*.json"))) >= 15


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.label for s in SCENARIOS])
def test_scenario(scenario: Scenario, bundled: cdss.RuleSet) -> None:
    failures = check(scenario, bundled)
    assert not failures, f"{scenario.label}\n  " + "\n  ".join(failures)


def test_every_rule_has_a_positive_and_a_negative_scenario(bundled: cdss.RuleSet) -> None:
    positive = {rule for s in SCENARIOS for rule in s.fired}
    negative = {rule for s in SCENARIOS for rule in s.not_fired}
    rules = {r.id for r in bundled.rules}
    assert rules - positive == set(), "rules without a scenario where they fire"
    assert rules - negative == set(), "rules without a scenario where they must not fire"


def test_every_emergency_rule_has_a_missing_data_scenario(bundled: cdss.RuleSet) -> None:
    """A scenario where the rule's red flag is unknown, it does not fire, and screening is incomplete."""
    for rule in bundled.rules:
        if rule.category != "emergency":
            continue
        from cdss.conditions import leaves

        fields = {leaf.field.path for leaf in leaves(rule.when)}
        covered = False
        for s in SCENARIOS:
            if rule.id not in s.not_fired or s.expect.get("red_flag_screening") != "incomplete":
                continue
            section_values = {path: _get(s.patient, path) for path in fields}
            if any(value is None for value in section_values.values()):
                covered = True
        assert covered, f"{rule.id}: no scenario where its red flag is unknown"


def _get(doc: dict, path: str) -> object:
    node: object = doc
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node
