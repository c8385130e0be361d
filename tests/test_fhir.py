"""FHIR in and out (docs/FHIR.md): the generated Questionnaire, QuestionnaireResponse as input
(round trip, strictness, hostile responses), the GuidanceResponse Bundle, and the command line.

Every produced resource is parsed with fhir.resources (R4B models, in the `test` extra)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import given
from hypothesis import strategies as st

import cdss
from cdss.cli import cli
from cdss.errors import PatientDataError
from cdss.fhir import (
    guidance_bundle, patient_from_questionnaire_response, questionnaire, questionnaire_response_from_patient,
)
from cdss.fhir.common import is_fhir_string, questionnaire_canonical
from cdss.fhir.response import MAX_ITEMS
from cdss.fhir.validate import validate_resource
from cdss.fields import patient_fields
from tests.conftest import FIXTURES, ROOT
from tests.strategies import (
    ABSENT, get, json_values, patients_with_screening, put, red_flag_paths, valid_patients,
)

EXAMPLES = sorted((ROOT / "examples" / "patients").glob("*.json"))
RULES = cdss.load_rules()
CANONICAL = questionnaire_canonical(RULES.info)
LOINC = "http://loinc.org"
YES, NO, UNKNOWN = "LA33-6", "LA32-8", "LA4489-6"


def qr(*items: dict[str, Any], status: str = "completed", questionnaire_: str = CANONICAL) -> dict[str, Any]:
    return {"resourceType": "QuestionnaireResponse", "questionnaire": questionnaire_, "status": status,
            "item": list(items)}


def coding(code: str, system: str = LOINC) -> dict[str, Any]:
    return {"valueCoding": {"system": system, "code": code}}


def red_flag(name: str, answer: list[dict[str, Any]] | None) -> dict[str, Any]:
    item: dict[str, Any] = {"linkId": f"red_flags.{name}"}
    if answer is not None:
        item["answer"] = answer
    return {"linkId": "red_flags", "item": [item]}


def reject(resource: Any, path_part: str, *words: str, **options: Any) -> PatientDataError:
    """The response is refused with one PatientDataError naming `path_part`, by the converter and by evaluate."""
    with pytest.raises(PatientDataError) as caught:
        patient_from_questionnaire_response(resource, RULES, **options)
    error = caught.value
    assert path_part in error.path, (error.path, str(error))
    for word in words:
        assert word in str(error), (word, str(error))
    if not options:
        with pytest.raises(PatientDataError) as again:
            RULES.evaluate(resource)
        assert str(again.value) == str(error)
    return error


# ------------------------------------------------------------------ the Questionnaire


def all_items(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        out[item["linkId"]] = item
        out.update(all_items(item.get("item", [])))
    return out


def test_questionnaire_is_valid_fhir_and_deterministic() -> None:
    resource = questionnaire(RULES.info)
    validate_resource(resource)
    assert json.dumps(resource) == json.dumps(questionnaire(cdss.load_rules().info))
    assert resource["url"] + "|" + resource["version"] == CANONICAL
    assert resource["version"] == RULES.info.version
    assert RULES.info.digest in resource["identifier"][0]["value"]


def test_questionnaire_has_one_item_per_patient_field_with_the_schema_types() -> None:
    items = all_items(questionnaire(RULES.info)["item"])
    questions = {link: item for link, item in items.items() if item["type"] != "group"}
    assert set(questions) == set(patient_fields()) | {"patient_id"}
    for path, field in patient_fields().items():
        item = questions[path]
        assert item["text"] == field.description
        if field.kind == "tristate":
            assert item["type"] == "choice"
            assert [o["valueCoding"]["code"] for o in item["answerOption"]] == [YES, NO, UNKNOWN]
            assert {o["valueCoding"]["system"] for o in item["answerOption"]} == {LOINC}
        elif field.kind == "enum":
            codes = [o["valueCoding"]["code"] for o in item["answerOption"]]
            assert codes == [*field.values, UNKNOWN]
        else:
            assert item["type"] == "integer"
            bounds = {e["url"].rsplit("/", 1)[-1]: e["valueInteger"] for e in item["extension"]}
            assert bounds == {"minValue": field.minimum, "maxValue": field.maximum}
    assert questions["exercise.stage"]["answerOption"][0]["valueCoding"]["code"] == "none"
    # groups follow the schema's objects
    assert items["observations.hip_drop_in_single_leg_stance"]["type"] == "group"
    assert [i["linkId"] for i in items["red_flags"]["item"]] == list(red_flag_paths())


def test_coded_items_carry_the_verified_code_and_observation_extract() -> None:
    items = all_items(questionnaire(RULES.info)["item"])
    coded = {link: item for link, item in items.items() if "code" in item}
    assert set(coded) == {"back_pain.present"}
    assert coded["back_pain.present"]["code"] == [
        {"system": "http://snomed.info/sct", "code": "279039007", "display": "Low back pain"}]
    for item in items.values():
        extract = [e for e in item.get("extension", []) if e["url"].endswith("sdc-questionnaire-observationExtract")]
        assert bool(extract) == ("code" in item)
        assert all(e["valueBoolean"] is True for e in extract)


def test_questionnaire_follows_the_rule_set_identity() -> None:
    other = cdss.load_rules(FIXTURES / "basic")
    resource = questionnaire(other.info)
    assert resource["url"].endswith("/" + other.info.id) and resource["version"] == other.info.version
    validate_resource(resource)


# ------------------------------------------------------------------ QuestionnaireResponse -> patient


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_patient_round_trips(path: Path) -> None:
    patient = json.loads(path.read_text(encoding="utf-8"))
    response = questionnaire_response_from_patient(patient, RULES)
    validate_resource(response)
    assert patient_from_questionnaire_response(response, RULES) == patient
    assert RULES.evaluate(response).to_json() == RULES.evaluate(patient).to_json()


def fhir_carriable(patient: dict[str, Any]) -> bool:
    return "patient_id" not in patient or is_fhir_string(patient["patient_id"])


@given(valid_patients().filter(fhir_carriable))
def test_round_trip_is_the_identity_for_any_patient(patient: dict[str, Any]) -> None:
    response = questionnaire_response_from_patient(patient, RULES)
    assert patient_from_questionnaire_response(json.loads(json.dumps(response)), RULES) == patient


@given(valid_patients().filter(fhir_carriable))
def test_a_response_evaluates_exactly_like_its_patient_document(patient: dict[str, Any]) -> None:
    response = questionnaire_response_from_patient(patient, RULES)
    assert RULES.evaluate(response).to_json() == RULES.evaluate(patient).to_json()


def test_unknown_and_left_out_are_unknown_never_no() -> None:
    answered_unknown = qr(red_flag("significant_leg_weakness", [coding(UNKNOWN)]))
    not_answered = qr(red_flag("significant_leg_weakness", None))
    left_out = qr({"linkId": "red_flags"})
    assert patient_from_questionnaire_response(answered_unknown, RULES) == {"red_flags": {"significant_leg_weakness": None}}
    assert patient_from_questionnaire_response(not_answered, RULES) == {"red_flags": {"significant_leg_weakness": None}}
    assert patient_from_questionnaire_response(left_out, RULES) == {"red_flags": {}}
    for response in (answered_unknown, not_answered, left_out, qr()):
        result = RULES.evaluate(response)
        assert result.red_flag_screening == "incomplete"
        assert result.urgency in ("see-professional", "emergency")
        assert "red_flags.significant_leg_weakness" in result.missing


def test_yes_and_no_are_read_as_true_and_false() -> None:
    items = [{"linkId": f"red_flags.{name.split('.')[1]}", "answer": [coding(NO)]} for name in red_flag_paths()]
    patient = patient_from_questionnaire_response(qr({"linkId": "red_flags", "item": items}), RULES)
    assert patient == {"red_flags": {name.split(".")[1]: False for name in red_flag_paths()}}
    items[1]["answer"] = [coding(YES)]
    assert RULES.evaluate(qr({"linkId": "red_flags", "item": items})).urgency == "emergency"


def test_amended_is_accepted_in_progress_only_on_request() -> None:
    assert patient_from_questionnaire_response(qr(status="amended"), RULES) == {}
    reject(qr(status="in-progress"), "QuestionnaireResponse.status", "completed or amended", "--allow-in-progress")
    assert patient_from_questionnaire_response(qr(status="in-progress"), RULES, allow_in_progress=True) == {}
    for status in ("entered-in-error", "stopped", None, 3):
        reject(qr(status=status), "QuestionnaireResponse.status")  # type: ignore[arg-type]
        with pytest.raises(PatientDataError):
            patient_from_questionnaire_response(qr(status=status), RULES, allow_in_progress=True)  # type: ignore[arg-type]


def test_the_bundled_rules_are_the_default() -> None:
    response = questionnaire_response_from_patient({"back_pain": {"present": True}})
    assert response["questionnaire"] == CANONICAL
    assert patient_from_questionnaire_response(response) == {"back_pain": {"present": True}}


def test_a_plain_patient_document_never_imports_cdss_fhir() -> None:
    code = ("import sys, cdss\n"
            "cdss.evaluate({'back_pain': {'present': True}})\n"
            "try:\n    cdss.evaluate({'back_pian': {}})\nexcept cdss.PatientDataError as e:\n    print(e)\n"
            "print('cdss.fhir' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    message, imported = done.stdout.strip().splitlines()
    assert imported == "False"
    assert message.startswith("$.back_pian: expected one of the known keys") and "did you mean 'back_pain'" in message


# ------------------------------------------------------------------ hostile responses


def test_wrong_questionnaire_url_or_version_is_refused() -> None:
    url = CANONICAL.split("|")[0]
    for named in (f"{url}|0.0.1", url, "https://example.org/Questionnaire/x|1.0.0", None, 7, "x" * 10_000):
        error = reject(qr(questionnaire_=named), "QuestionnaireResponse.questionnaire", CANONICAL)  # type: ignore[arg-type]
        assert len(str(error)) < 600
    assert CANONICAL != questionnaire_canonical(cdss.load_rules(FIXTURES / "basic").info)
    with pytest.raises(PatientDataError, match="questionnaire"):
        cdss.load_rules(FIXTURES / "basic").evaluate(qr())


def test_unknown_and_misplaced_link_ids_are_named() -> None:
    reject(qr({"linkId": "red_flags", "item": [{"linkId": "red_flags.bogus", "answer": [coding(YES)]}]}),
           "red_flags.bogus", "unknown linkId", "red_flags.significant_leg_weakness")
    reject(qr({"linkId": "red_flags.significant_leg_weakness", "answer": [coding(YES)]}),
           "red_flags.significant_leg_weakness", "wrong place", "inside the group 'red_flags'")
    reject(qr({"linkId": "back_pain", "item": [{"linkId": "red_flags.significant_leg_weakness"}]}),
           "red_flags.significant_leg_weakness", "wrong place")
    reject(qr({"answer": []}), "item[0].linkId", "a linkId")


def test_repeated_link_ids_are_refused() -> None:
    weakness = {"linkId": "red_flags.significant_leg_weakness", "answer": [coding(NO)]}
    reject(qr({"linkId": "red_flags", "item": [weakness, {**weakness, "answer": [coding(YES)]}]}),
           "red_flags.significant_leg_weakness", "at most once")
    reject(qr({"linkId": "red_flags", "item": []}, {"linkId": "red_flags", "item": []}), "'red_flags'", "at most once")


def test_nested_items_are_refused() -> None:
    nested_in_answer = {"linkId": "red_flags.significant_leg_weakness",
                        "answer": [{**coding(NO), "item": [{"linkId": "red_flags.significant_leg_weakness"}]}]}
    reject(qr({"linkId": "red_flags", "item": [nested_in_answer]}), "red_flags.significant_leg_weakness",
           "nested under the answer")
    nested_in_question = {"linkId": "red_flags.significant_leg_weakness", "item": [{"linkId": "x"}]}
    reject(qr({"linkId": "red_flags", "item": [nested_in_question]}), "red_flags.significant_leg_weakness", "nested items")
    reject(qr({"linkId": "red_flags", "answer": [coding(NO)]}), "'red_flags'", "a group")
    deep: dict[str, Any] = {"linkId": "deep"}
    for _ in range(5000):
        deep = {"linkId": "deep", "item": [deep]}
    reject(qr(deep), "'deep'", "unknown linkId")


@pytest.mark.parametrize("answer, found", [
    ([{"valueBoolean": False}], "valueBoolean"),
    ([coding(NO, "http://snomed.info/sct")], "the coding http://snomed.info/sct|LA32-8"),
    ([coding("LA9999-9")], "LA9999-9"),
    ([{"valueString": "no"}], "valueString"),
    ([{"valueCoding": "no"}], "valueCoding"),
    ([coding(NO), coding(YES)], "2 answers"),
    ([{}], "no value"),
    ([{"valueBoolean": False, "valueCoding": {"system": LOINC, "code": NO}}], "several values"),
    ({"valueBoolean": False}, "an object"),
    (["no"], "string"),
])
def test_wrong_answer_types_for_a_yes_no_question(answer: Any, found: str) -> None:
    error = reject(qr(red_flag("significant_leg_weakness", answer)), "red_flags.significant_leg_weakness", found)
    if isinstance(answer, list) and len(answer) == 1 and isinstance(answer[0], dict) and "valueBoolean" in answer[0] \
            and len(answer[0]) == 1:
        assert "Unknown" in str(error)


@pytest.mark.parametrize("link_id, answer, words", [
    ("exercise.weeks_consistent", {"valueInteger": 521}, ["from 0 to 520", "521"]),
    ("exercise.weeks_consistent", {"valueInteger": -1}, ["from 0 to 520"]),
    ("exercise.weeks_consistent", {"valueInteger": True}, ["valueInteger true"]),
    ("exercise.weeks_consistent", {"valueInteger": 2.5}, ["valueInteger"]),
    ("exercise.weeks_consistent", {"valueDecimal": 2}, ["valueDecimal"]),
    ("exercise.stage", {"valueCoding": {"system": LOINC, "code": YES}}, ["activation"]),
    ("exercise.stage", {"valueCoding": {"system": "https://cdss.invalid/fhir/CodeSystem/exercise-stage",
                                        "code": "advanced"}}, ["advanced"]),
    ("exercise.stage", {"valueString": "none"}, ["valueString"]),
])
def test_wrong_answer_types_for_other_questions(link_id: str, answer: dict[str, Any], words: list[str]) -> None:
    reject(qr({"linkId": "exercise", "item": [{"linkId": link_id, "answer": [answer]}]}), link_id, *words)


def test_patient_id_is_text_of_bounded_length() -> None:
    reject(qr({"linkId": "patient_id", "answer": [{"valueString": "x" * 65}]}), "patient_id", "65")
    reject(qr({"linkId": "patient_id", "answer": [{"valueInteger": 1}]}), "patient_id", "valueString")


def test_ten_thousand_items_give_one_clear_error() -> None:
    many = [{"linkId": "red_flags.significant_leg_weakness", "answer": [coding(NO)]}] * 10_000
    reject(qr(*many), "QuestionnaireResponse.item", f"at most {MAX_ITEMS}", "10,000 items")
    reject(qr({"linkId": "red_flags", "item": many}), "QuestionnaireResponse.item", f"at most {MAX_ITEMS}", "10,001 items")


def test_other_hostile_shapes() -> None:
    reject({"resourceType": "Patient"}, "$.resourceType", "QuestionnaireResponse", "Patient")
    reject({**qr(), "modifierExtension": [{"url": "x", "valueBoolean": True}]}, "modifierExtension", "cannot read")
    reject({**qr(), "foo": 1}, "QuestionnaireResponse.foo")
    reject(qr(red_flag("significant_leg_weakness", [{**coding(NO), "bogus": 1}])),
           "red_flags.significant_leg_weakness", "several values")
    reject(qr({"linkId": "red_flags", "item": [{"linkId": "red_flags.significant_leg_weakness",
                                                 "modifierExtension": []}]}), "significant_leg_weakness", "modifier")
    reject({**qr(), "item": {"linkId": "red_flags"}}, "QuestionnaireResponse.item", "a list")
    reject(qr("red_flags"), "item[0]", "an item")  # type: ignore[arg-type]
    with pytest.raises(PatientDataError):
        patient_from_questionnaire_response([], RULES)  # type: ignore[arg-type]


# ------------------------------------------------------------------ GuidanceResponse out


def resources(bundle: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in bundle["entry"]:
        assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
        out.setdefault(entry["resource"]["resourceType"], []).append(entry["resource"])
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_result_is_a_valid_fhir_bundle(path: Path) -> None:
    patient = json.loads(path.read_text(encoding="utf-8"))
    result = RULES.evaluate(patient).to_dict()
    bundle = guidance_bundle(result)
    validate_resource(bundle)
    assert json.dumps(bundle) == json.dumps(guidance_bundle(RULES.evaluate(patient).to_dict()))  # deterministic
    found = resources(bundle)
    (guidance,) = found["GuidanceResponse"]
    (group,) = found["RequestGroup"]
    (plan,) = found["CarePlan"]
    assert guidance["result"] == {"reference": f"urn:uuid:{group['id']}"}
    digest = result["rule_set"]["digest"]
    incomplete = result["red_flag_screening"] == "incomplete"
    # issue 17: the result's open questions, then any unanswered red flag they do not already ask
    open_fields = [q["field"] for q in result["questions"]]
    open_fields += [f for f in result["missing"] if incomplete and f.startswith("red_flags.") and f not in open_fields]
    assert guidance["status"] == ("data-required" if open_fields else "success")
    if incomplete:
        assert open_fields and all(f in open_fields for f in result["missing"] if f.startswith("red_flags."))
    if open_fields:
        asked = [r["mustSupport"][0] for r in guidance["dataRequirement"]]
        assert asked == open_fields
    # every action a rule produced names the rule and the rule set digest
    actions = [a for top in group["action"] for a in top.get("action", [])]
    assert len(actions) == len(result["findings"]) + len(result["cards"])
    for action in actions:
        urls = {e["url"].rsplit("/", 1)[-1]: e["valueString"] for e in action["extension"] if "valueString" in e}
        assert urls["rule"] in {f["rule"] for f in result["findings"]} | {c["rule"] for c in result["cards"]}
        assert urls["rule-set"].endswith(digest)
    referrals = [c for c in result["cards"] if "referral" in c]
    assert len(found.get("ServiceRequest", [])) == len(referrals)
    for request, card in zip(found.get("ServiceRequest", []), referrals):
        assert request["intent"] == "proposal" and request["reasonCode"][0]["text"] == card["referral"]["reason"]
        assert {"immediately": "stat", "soon": "urgent", "within-weeks": "routine",
                "routine": "routine"}[card["referral"]["timeframe"]] == request["priority"]
        if card["referral"]["timeframe"] == "within-weeks":  # a deadline, not an urgent appointment
            assert request["occurrenceTiming"]["repeat"]["boundsDuration"] == {
                "value": card["referral"]["weeks"], "unit": "weeks", "system": "http://unitsofmeasure.org", "code": "wk"}
            assert card["referral"]["within"] in request["note"][0]["text"]
    assert len(plan.get("activity", [])) == len(result["plan"]["exercises"])
    assert [n["text"] for n in plan.get("note", [])] == result["plan"]["notes"]


@given(patients_with_screening("incomplete").filter(fhir_carriable))
def test_never_success_while_red_flag_screening_is_incomplete(patient: dict[str, Any]) -> None:
    bundle = guidance_bundle(RULES.evaluate(patient).to_dict())
    guidance = bundle["entry"][0]["resource"]
    assert guidance["status"] == "data-required"
    unanswered = [p for p in red_flag_paths() if get(patient, p) in (None, ABSENT)]
    asked = [r["mustSupport"][0] for r in guidance["dataRequirement"]]
    assert asked[:len(unanswered)] == unanswered  # the red flags first (issue 17 ranks them first)


def test_open_questions_of_the_result_become_data_requirements() -> None:
    patient = put(json.loads((ROOT / "examples/patients/classic-beginner.json").read_text()), "back_pain.trend", ABSENT)
    result = RULES.evaluate(patient).to_dict()
    assert result["red_flag_screening"] == "negative"
    assert guidance_bundle(dict(result, questions=[]))["entry"][0]["resource"]["status"] == "success"
    result["questions"] = [{"field": "back_pain.trend", "reason": "Is the pain improving?", "could_change": "urgency"}]
    guidance = guidance_bundle(result)["entry"][0]["resource"]
    assert guidance["status"] == "data-required"
    (requirement,) = guidance["dataRequirement"]
    assert requirement["mustSupport"] == ["back_pain.trend"]
    assert requirement["extension"][0]["valueString"] == "Is the pain improving?"


def test_an_emergency_is_a_stat_referral() -> None:
    patient = json.loads((ROOT / "examples/patients/red-flag-leg-weakness.json").read_text())
    found = resources(guidance_bundle(RULES.evaluate(patient).to_dict()))
    assert found["RequestGroup"][0]["priority"] == "stat"
    assert any(r["priority"] == "stat" for r in found["ServiceRequest"])
    assert "activity" not in found["CarePlan"][0]  # exercise advice withheld


# ------------------------------------------------------------------ command line


def invoke(*args: str, input: bytes | str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, prog_name="cdss")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CDSS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cdss-cache"))


def test_cli_questionnaire() -> None:
    done = invoke("fhir", "questionnaire", "--validate")
    assert done.exit_code == 0, done.output
    assert json.loads(done.output) == questionnaire(RULES.info)
    other = invoke("fhir", "questionnaire", "--rules", str(FIXTURES / "basic"))
    assert json.loads(other.output)["url"] != json.loads(done.output)["url"]


def test_cli_response_then_evaluate_is_the_plain_result(tmp_path: Path) -> None:
    example = str(ROOT / "examples/patients/classic-beginner.json")
    converted = invoke("fhir", "response", example)
    assert converted.exit_code == 0, converted.output
    path = tmp_path / "qr.json"
    path.write_text(converted.output, encoding="utf-8")
    assert invoke("fhir", "validate", str(path)).exit_code == 0
    plain = invoke("evaluate", "--format", "json", example).output
    assert invoke("evaluate", "--format", "json", str(path)).output == plain
    assert invoke("evaluate", "--format", "json", "-", input=converted.output).output == plain
    fhir_out = invoke("evaluate", "--format", "fhir", str(path))
    assert fhir_out.exit_code == 0
    bundle = json.loads(fhir_out.output)
    validate_resource(bundle)
    assert bundle == guidance_bundle(json.loads(plain))
    assert invoke("evaluate", "--format", "fhir", "--explain", str(path)).exit_code == 2


def test_cli_jsonl_mixes_plain_documents_and_responses() -> None:
    patient = {"patient_id": "p1", "red_flags": {"significant_leg_weakness": True}}
    response = questionnaire_response_from_patient(patient, RULES)
    unfinished = {**response, "status": "in-progress"}
    lines = "\n".join(json.dumps(d) for d in (patient, response, unfinished)) + "\n"
    done = invoke("evaluate", "--jsonl", "-", input=lines)
    assert done.exit_code == 1
    first, second, third = [json.loads(line) for line in done.stdout.splitlines()]
    assert first == second and first["urgency"] == "emergency"
    assert third["line"] == 3 and third["error"]["path"] == "QuestionnaireResponse.status"
    allowed = invoke("evaluate", "--jsonl", "--allow-in-progress", "--format", "fhir", "-", input=lines)
    assert allowed.exit_code == 0, allowed.output
    bundles = [json.loads(line) for line in allowed.stdout.splitlines()]
    assert bundles[0] == bundles[1] == bundles[2]
    assert bundles[0]["entry"][0]["resource"]["resourceType"] == "GuidanceResponse"


def test_cli_errors_name_the_link_id(tmp_path: Path) -> None:
    bad = qr(red_flag("significant_leg_weakness", [{"valueBoolean": False}]))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    done = invoke("evaluate", "--format", "json", str(path))
    assert done.exit_code == 1
    (line,) = [line for line in done.stderr.splitlines() if line.strip()]
    assert line.startswith(f"cdss: error: {path}: linkId 'red_flags.significant_leg_weakness': expected an answer "
                           "valueCoding Yes (LOINC LA33-6)")
    record = json.loads(done.stdout)
    assert record["error"]["path"] == "linkId 'red_flags.significant_leg_weakness'"
    wrong_version = copy.deepcopy(bad)
    wrong_version["questionnaire"] = CANONICAL.replace(RULES.info.version, "9.9.9")
    path.write_text(json.dumps(wrong_version), encoding="utf-8")
    assert "QuestionnaireResponse.questionnaire: expected" in invoke("evaluate", str(path)).stderr


def test_cli_validate_refuses_invalid_fhir(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"resourceType": "GuidanceResponse", "status": "success"}), encoding="utf-8")
    done = invoke("fhir", "validate", str(path))
    assert done.exit_code == 1 and "not valid FHIR R4" in done.stderr


def test_cli_response_refuses_an_invalid_patient_document(tmp_path: Path) -> None:
    path = tmp_path / "typo.json"
    path.write_text(json.dumps({"red_flags": {"significant_leg_weaknes": True}}), encoding="utf-8")
    done = invoke("fhir", "response", str(path))
    assert done.exit_code == 1 and done.stdout == ""
    assert "$.red_flags.significant_leg_weaknes: expected one of the known keys" in done.stderr
    assert "did you mean 'significant_leg_weakness'" in done.stderr


def test_cli_help_lists_the_fhir_commands_and_format() -> None:
    assert "fhir" in invoke("--help").output
    helped = invoke("fhir", "--help").output
    assert all(name in helped for name in ("questionnaire", "response", "validate"))
    evaluate_help = invoke("evaluate", "--help").output
    assert "--allow-in-progress" in evaluate_help and "fhir" in evaluate_help


@given(valid_patients().filter(fhir_carriable))
def test_every_produced_resource_is_valid_fhir_for_any_patient(patient: dict[str, Any]) -> None:
    validate_resource(questionnaire_response_from_patient(patient, RULES))
    validate_resource(guidance_bundle(RULES.evaluate(patient).to_dict()))


@pytest.mark.parametrize("patient_id", ["", "\x0b", "\u2003", "a\x0cb"])
def test_a_patient_id_fhir_cannot_carry_is_refused_never_dropped(patient_id: str) -> None:
    patient = {"patient_id": patient_id, "back_pain": {"present": True}}
    with pytest.raises(PatientDataError, match=r"^\$\.patient_id: expected text FHIR can carry"):
        questionnaire_response_from_patient(patient, RULES)
    with pytest.raises(PatientDataError, match=r"^\$\.patient_id: expected text FHIR can carry"):
        guidance_bundle(RULES.evaluate(patient).to_dict())
    reject(qr({"linkId": "patient_id", "answer": [{"valueString": patient_id}]}), "patient_id", "text FHIR can carry")
    lines = "\n".join(json.dumps(d) for d in (patient, {"patient_id": "ok"})) + "\n"
    done = invoke("evaluate", "--jsonl", "--format", "fhir", "-", input=lines)
    assert done.exit_code == 1
    first, second = [json.loads(line) for line in done.stdout.splitlines()]
    assert first["error"]["path"] == "$.patient_id" and second["resourceType"] == "Bundle"
    single = invoke("evaluate", "--format", "fhir", "-", input=json.dumps(patient))
    assert single.exit_code == 1 and json.loads(single.stdout)["error"]["path"] == "$.patient_id"


def subtrees(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in a JSON tree, as a path of keys and indexes."""
    out = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            out += subtrees(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += subtrees(child, (*path, index))
    return out


def replaced(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    out = copy.copy(value)
    out[path[0]] = replaced(value[path[0]], path[1:], new)
    return out


@st.composite
def corrupted_responses(draw: st.DrawFn, json_only: bool) -> Any:
    """A valid response with one subtree (or the whole) replaced by an arbitrary value."""
    response = questionnaire_response_from_patient(draw(valid_patients().filter(fhir_carriable)), RULES)
    return replaced(response, draw(st.sampled_from(subtrees(response))), draw(json_values(json_only)))


@given(corrupted_responses(json_only=True) | corrupted_responses(json_only=False))
def test_a_corrupted_response_is_a_patient_or_one_patient_data_error(resource: Any) -> None:
    fhir = isinstance(resource, dict) and "resourceType" in resource  # else evaluate reads a plain document
    try:
        patient = patient_from_questionnaire_response(resource, RULES)
    except PatientDataError as error:
        assert error.path and error.expected and error.found
        if fhir:
            with pytest.raises(PatientDataError):
                RULES.evaluate(resource)
        return
    assert fhir
    assert RULES.evaluate(resource).to_json() == RULES.evaluate(patient).to_json()
