"""Every operator of the condition language, compiled for durable-rules, agrees with its meaning.

The Python evaluator states the meaning; durable-rules executes the compiled form. For each
operator (plain and under `not`), every value the field can take is run through both.
"""

from __future__ import annotations

import itertools

import pytest

import cdss
from cdss.fields import patient_fields
from tests.helpers import rules_body, write_rule_set

TRI = "observations.excessive_anterior_pelvic_tilt"
ENUM = "back_pain.trend"
INT = "exercise.weeks_consistent"

LEAVES = {
    "tri-true": f"{{field: {TRI}, is: true}}",
    "tri-false": f"{{field: {TRI}, is: false}}",
    "tri-unknown": f"{{field: {TRI}, is: unknown}}",
    "tri-known": f"{{field: {TRI}, is: known}}",
    "enum-equals": f"{{field: {ENUM}, equals: worsening}}",
    "enum-in": f"{{field: {ENUM}, in: [unchanged, worsening]}}",
    "enum-unknown": f"{{field: {ENUM}, is: unknown}}",
    "enum-known": f"{{field: {ENUM}, is: known}}",
    "int-gte": f"{{field: {INT}, gte: 4}}",
    "int-gt": f"{{field: {INT}, gt: 4}}",
    "int-lte": f"{{field: {INT}, lte: 4}}",
    "int-lt": f"{{field: {INT}, lt: 4}}",
    "int-equals": f"{{field: {INT}, equals: 4}}",
    "int-param": f"{{field: {INT}, gte: {{param: threshold}}}}",
    "int-unknown": f"{{field: {INT}, is: unknown}}",
    "int-known": f"{{field: {INT}, is: known}}",
}
COMPOSITES = {
    "all-of": f"{{all: [{LEAVES['tri-true']}, {LEAVES['int-gte']}]}}",
    "any-of": f"{{any: [{LEAVES['tri-true']}, {LEAVES['enum-equals']}]}}",
    "not-all": f"{{not: {{all: [{LEAVES['tri-true']}, {LEAVES['int-gte']}]}}}}",
    "not-any": f"{{not: {{any: [{LEAVES['tri-unknown']}, {LEAVES['enum-in']}]}}}}",
    "double-not": f"{{not: {{not: {LEAVES['enum-equals']}}}}}",
}
PARAMS = "parameters:\n  threshold:\n    type: integer\n    default: 5\n    origin: policy\n    description: test threshold\n"


def expected(rule: str, tri: object, trend: object, weeks: object, threshold: int = 5) -> bool:
    """The meaning of each test rule, written out independently of cdss."""
    t = {"tri-true": tri is True, "tri-false": tri is False, "tri-unknown": tri is None, "tri-known": tri is not None,
         "enum-equals": trend == "worsening", "enum-in": trend in ("unchanged", "worsening"),
         "enum-unknown": trend is None, "enum-known": trend is not None,
         "int-gte": weeks is not None and weeks >= 4, "int-gt": weeks is not None and weeks > 4,
         "int-lte": weeks is not None and weeks <= 4, "int-lt": weeks is not None and weeks < 4,
         "int-equals": weeks == 4, "int-param": weeks is not None and weeks >= threshold,
         "int-unknown": weeks is None, "int-known": weeks is not None}
    if rule.startswith("not-"):
        base = rule.removeprefix("not-")
        if base in t:
            return not t[base]
    composite = {"all-of": t["tri-true"] and t["int-gte"], "any-of": t["tri-true"] or t["enum-equals"],
                 "not-all": not (t["tri-true"] and t["int-gte"]), "not-any": not (t["tri-unknown"] or t["enum-in"]),
                 "double-not": t["enum-equals"]}
    return t[rule] if rule in t else composite[rule]


@pytest.fixture(scope="module")
def operator_rules(tmp_path_factory: pytest.TempPathFactory) -> cdss.RuleSet:
    rules = dict(LEAVES)
    rules.update({f"not-{name}": f"{{not: {when}}}" for name, when in LEAVES.items()})
    rules.update(COMPOSITES)
    directory = write_rule_set(tmp_path_factory.mktemp("ops"), rules_body(rules, PARAMS))
    return cdss.load_rules(directory)


GRID = list(itertools.product([True, False, None], [None, "improving", "unchanged", "worsening"], [None, 0, 3, 4, 5, 6, 520]))


@pytest.mark.parametrize(("tri", "trend", "weeks"), GRID)
def test_durable_rules_agrees_with_the_meaning_of_every_operator(operator_rules: cdss.RuleSet, tri, trend, weeks) -> None:
    doc = {"observations": {"excessive_anterior_pelvic_tilt": tri}, "back_pain": {"trend": trend},
           "exercise": {"weeks_consistent": weeks}}
    result = operator_rules.evaluate(doc, trace=True)  # trace also cross-checks durable against the evaluator
    fired = {step["rule"] for step in result.to_dict()["trace"] if step["fired"]}
    carded = {card["rule"] for card in result.cards}
    assert fired == carded
    for rule in operator_rules.rules:
        assert (rule.id in fired) == expected(rule.id, tri, trend, weeks), rule.id


def test_parameter_override_moves_the_threshold(operator_rules: cdss.RuleSet) -> None:
    lowered = operator_rules.with_parameters({"threshold": 3})
    doc = {"exercise": {"weeks_consistent": 3}}
    assert "int-param" not in {c["rule"] for c in operator_rules.evaluate(doc).cards}
    assert "int-param" in {c["rule"] for c in lowered.evaluate(doc).cards}
    assert lowered.evaluate(doc).to_dict()["parameters"] == {"threshold": 3}


def test_unknown_is_never_read_as_no(operator_rules: cdss.RuleSet) -> None:
    fired = {c["rule"] for c in operator_rules.evaluate({}).cards}
    assert "tri-false" not in fired and "tri-unknown" in fired
    assert not {"int-lt", "int-lte", "int-equals"} & fired


def test_every_patient_field_has_an_explicit_value_in_the_fact() -> None:
    from cdss.patient import flatten

    fact, unknown = flatten({})
    assert len(unknown) == len(patient_fields())
    for field in patient_fields().values():
        assert field.key in fact
