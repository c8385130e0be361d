"""The public Python API: results per the contract, isolation, determinism, errors."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import jsonschema
import pytest

import cdss
from tests.conftest import FIXTURES, ROOT
from tests.helpers import ALL_NO, patient

RESULT_SCHEMA = json.loads((ROOT / "schemas" / "result.schema.json").read_text())

A = patient(back_pain={"present": True}, exercise={"weeks_consistent": 8, "stage": "none"},
            observations={"hip_drop_in_single_leg_stance": {"standing_on_left": True}})
B = {"red_flags": {"significant_leg_weakness": True}}
C: dict = {}


def test_public_api_is_small_and_explicit() -> None:
    assert set(cdss.__all__) == {"Assessment", "CdssError", "EngineError", "ParameterError", "PatientDataError",
                                 "Problem", "RuleFileError", "RuleSet", "evaluate", "load_rules", "__version__"}
    for error in (cdss.RuleFileError, cdss.PatientDataError, cdss.EngineError, cdss.ParameterError):
        assert issubclass(error, cdss.CdssError)


def test_results_match_the_result_schema(basic_rules: cdss.RuleSet) -> None:
    for doc in (A, B, C):
        jsonschema.validate(basic_rules.evaluate(doc, trace=True).to_dict(), RESULT_SCHEMA)
        jsonschema.validate(basic_rules.evaluate(doc).to_dict(), RESULT_SCHEMA)


def test_trace_only_when_asked(basic_rules: cdss.RuleSet) -> None:
    assert "trace" not in basic_rules.evaluate(A).to_dict()
    trace = basic_rules.evaluate(A, trace=True).to_dict()["trace"]
    assert [step["rule"] for step in trace] == sorted(r.id for r in basic_rules.rules)
    refer = next(step for step in trace if step["rule"] == "refer")
    assert refer["fired"] is True
    assert {"field": "exercise.weeks_consistent", "op": "gte", "value": 6, "param": "refer_weeks", "saw": 8,
            "result": True} in refer["conditions"]


def test_evaluating_a_then_b_equals_b_alone(basic_rules: cdss.RuleSet) -> None:
    alone = cdss.load_rules(FIXTURES / "basic").evaluate(B).to_json()
    basic_rules.evaluate(A)
    assert basic_rules.evaluate(B).to_json() == alone
    for doc in (A, C, B, A):
        basic_rules.evaluate(doc)
    assert basic_rules.evaluate(B).to_json() == alone


def test_isolation_from_four_threads(basic_rules: cdss.RuleSet) -> None:
    docs = [A, B, C] * 5
    expected = {i: basic_rules.evaluate(d).to_json() for i, d in enumerate(docs)}
    mismatches: list[int] = []

    def work() -> None:
        for _ in range(30):
            for i, d in enumerate(docs):
                if basic_rules.evaluate(d).to_json() != expected[i]:
                    mismatches.append(i)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert mismatches == []


def test_results_are_byte_identical_across_loads(tmp_path: Path) -> None:
    first = cdss.load_rules(FIXTURES / "basic").evaluate(A).to_json()
    second = cdss.load_rules(FIXTURES / "basic").evaluate(json.loads(json.dumps(A))).to_json()
    assert first == second
    # key order of the input does not matter either
    reordered = dict(reversed(list(A.items())))
    assert cdss.load_rules(FIXTURES / "basic").evaluate(reordered).to_json() == first


def test_card_uuids_are_uuid8_and_depend_on_patient_and_rule(basic_rules: cdss.RuleSet) -> None:
    import uuid

    one = basic_rules.evaluate(A).cards
    other = basic_rules.evaluate({**A, "patient_id": "someone-else"}).cards
    assert len(one) >= 2 and [c["rule"] for c in one] == [c["rule"] for c in other]
    for a, b in zip(one, other):
        parsed = uuid.UUID(a["uuid"])
        assert parsed.version == 8 and parsed.variant == uuid.RFC_4122 and str(parsed) == a["uuid"]
        assert a["uuid"] != b["uuid"]
        assert a["uuid"][:8] == b["uuid"][:8]  # the rule's tag; the rest is the patient's
    assert len({c["uuid"] for c in one}) == len(one)
    assert len({c["uuid"][8:] for c in one}) == 1  # one hash per result


def test_cards_ordered_critical_warning_info_then_priority() -> None:
    rules = cdss.load_rules(FIXTURES / "basic")
    doc = {"red_flags": {"significant_leg_weakness": True}, "back_pain": {"present": True},
           "exercise": {"weeks_consistent": 9}}
    cards = rules.evaluate(doc).cards
    assert [c["indicator"] for c in cards] == sorted((c["indicator"] for c in cards),
                                                    key=["critical", "warning", "info"].index)
    assert cards[0]["rule"] == "red-flag"


def test_red_flag_withholds_the_plan_and_drops_exercise_cards(basic_rules: cdss.RuleSet) -> None:
    result = basic_rules.evaluate({**A, "red_flags": {**ALL_NO, "significant_leg_weakness": True}})
    assert result.urgency == "emergency" and result.red_flag_screening == "positive"
    assert result.plan["status"] == "withheld" and result.plan["exercises"] == [] and result.plan["phase"] is None
    assert "exercise-clamshell" not in {c["rule"] for c in result.cards}


def test_unknown_red_flag_makes_the_plan_pending(basic_rules: cdss.RuleSet) -> None:
    doc = {**A, "red_flags": {"significant_leg_weakness": False, "numbness_or_tingling_radiating_down_leg": False}}
    result = basic_rules.evaluate(doc)
    assert result.red_flag_screening == "incomplete"
    assert result.plan["status"] == "pending-screening" and result.plan["exercises"] == []
    assert "red_flags.sudden_bladder_or_bowel_control_loss" in result.missing


def test_all_clear_screening_recommends_the_plan(basic_rules: cdss.RuleSet) -> None:
    result = basic_rules.evaluate(A)
    assert result.red_flag_screening == "negative"
    assert result.plan["status"] == "recommended" and result.plan["phase"] == "activation"
    assert [e["id"] for e in result.plan["exercises"]] == ["clamshell"]
    assert result.findings == [{"rule": "hip-drop-left", "code": "gluteus-medius-minimus-weakness", "side": "left",
                                "text": "Left side weak."}]


def test_cds_hooks_rendering_is_strict(basic_rules: cdss.RuleSet) -> None:
    response = basic_rules.evaluate(B).to_cds_hooks()
    assert set(response) == {"cards"}
    card = response["cards"][0]
    assert set(card) == {"uuid", "summary", "detail", "indicator", "source", "extension"}
    assert card["indicator"] == "critical" and len(card["summary"]) < 140 and card["source"]["label"]
    assert card["extension"]["invalid.cdss"]["rule"] == "red-flag"


@pytest.mark.parametrize(
    ("doc", "path", "fragment"),
    [
        ([], "$", "JSON object"),
        ({"red_flags": {"sigificant_leg_weakness": True}}, "$.red_flags.sigificant_leg_weakness", "did you mean 'significant_leg_weakness'"),
        ({"red_flag": {}}, "$.red_flag", "did you mean 'red_flags'"),
        ({"back_pain": {"present": "yes"}}, "$.back_pain.present", "found string 'yes'"),
        ({"exercise": {"weeks_consistent": -1}}, "$.exercise.weeks_consistent", "at least 0"),
        ({"exercise": {"weeks_consistent": float("nan")}}, "$.exercise.weeks_consistent", "found NaN or infinity"),
        ({"exercise": {"weeks_consistent": True}}, "$.exercise.weeks_consistent", "whole number"),
        ({"back_pain": {"trend": "better"}}, "$.back_pain.trend", "one of 'improving'"),
        ({"patient_id": 7}, "$.patient_id", "a string"),
    ],
)
def test_invalid_patients_raise_patient_data_error_with_path(basic_rules: cdss.RuleSet, doc, path, fragment) -> None:
    with pytest.raises(cdss.PatientDataError) as info:
        basic_rules.evaluate(doc)
    assert info.value.path == path
    assert fragment in str(info.value)


def test_parameter_overrides_are_validated(basic_rules: cdss.RuleSet) -> None:
    with pytest.raises(cdss.ParameterError, match="did you mean 'refer_weeks'"):
        basic_rules.with_parameters({"refer_week": 5})
    with pytest.raises(cdss.ParameterError, match="stated by the source"):
        basic_rules.with_parameters({"sets_max": 4})
    with pytest.raises(cdss.ParameterError, match="above the maximum"):
        basic_rules.with_parameters({"refer_weeks": 9})
    with pytest.raises(cdss.ParameterError, match="takes integer"):
        basic_rules.with_parameters({"refer_weeks": "five"})
    five = basic_rules.with_parameters({"refer_weeks": "5"})
    assert five.parameter_values["refer_weeks"] == 5 and basic_rules.parameter_values["refer_weeks"] == 6
    doc = patient(back_pain={"present": True}, exercise={"weeks_consistent": 5})
    assert "refer" in {c["rule"] for c in five.evaluate(doc).cards}
    assert "refer" not in {c["rule"] for c in basic_rules.evaluate(doc).cards}


def test_convenience_evaluate_uses_the_cached_bundled_rules() -> None:
    first = cdss.evaluate({})
    assert cdss.bundled_rules() is cdss.bundled_rules()
    assert first.to_json() == cdss.load_rules().evaluate({}).to_json()


def test_assessment_is_immutable_from_outside(basic_rules: cdss.RuleSet) -> None:
    result = basic_rules.evaluate(A)
    before = result.to_json()
    result.cards.clear()
    result.to_dict()["plan"]["exercises"].clear()
    assert result.to_json() == before


def test_overrides_may_not_break_a_parameter_constraint(bundled: cdss.RuleSet) -> None:
    with pytest.raises(cdss.ParameterError, match="may not exceed"):
        bundled.with_parameters({"escalation_review_weeks": 6, "escalation_refer_weeks": 5})
    assert bundled.with_parameters({"escalation_review_weeks": 5}).parameter_values["escalation_review_weeks"] == 5
