"""A result as FHIR R4 resources: a Bundle (type collection) of a GuidanceResponse, the
RequestGroup it points to (findings, advice cards, the plan), a CarePlan (the exercise plan)
and one ServiceRequest per referral. Every element a rule produced names the rule and the
rule set (id, version, digest). Deterministic: ids are UUIDv5 of the result's canonical JSON.

Status `data-required` (with one dataRequirement per open question, naming its linkId) when
questions are open: the result's `questions` (issue 17) and, always, an unanswered red flag
while screening is incomplete. A GuidanceResponse never says `success` while the red-flag
screen is incomplete.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from ..errors import PatientDataError, describe_value
from ..result import RED_FLAG_PREFIX, canonical
from .common import (
    BASE, EXT_PHASE, EXT_PLAN_STATUS, EXT_QUESTION, EXT_RULE, EXT_RULE_SET, EXT_SCREENING, EXT_SIDE, EXT_URGENCY,
    FHIR_STRING_EXPECTED, PATIENT_ID_SYSTEM, is_fhir_string, rule_set_uri,
)

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, f"{BASE}/resources")
PRIORITY = {"immediately": "stat", "soon": "urgent", "routine": "routine"}
"""Referral timeframe -> FHIR request priority."""
URGENCY_PRIORITY = {"emergency": "stat", "see-professional": "urgent", "self-care": "routine", "none": "routine"}
FINDING_SYSTEM = f"{BASE}/CodeSystem/finding"
EXERCISE_SYSTEM = f"{BASE}/CodeSystem/exercise"
RED_FLAG_REASON = "A red-flag question is unanswered: red-flag screening is incomplete until it is answered."


def _rule_set_ext(rule_set: Mapping[str, Any]) -> dict[str, Any]:
    return {"url": EXT_RULE_SET, "valueString": f"{rule_set['id']}|{rule_set['version']}|{rule_set['digest']}"}


def _rule_ext(rule: str, rule_set: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [{"url": EXT_RULE, "valueString": rule}, _rule_set_ext(rule_set)]


def open_questions(result: Mapping[str, Any]) -> list[dict[str, str]]:
    """[{field, reason}] for the dataRequirement: the result's questions, plus every unanswered red
    flag while screening is incomplete (so the fallback holds before and after issue 17)."""
    out: list[dict[str, str]] = []
    seen: set[str] = set()
    for question in result.get("questions", []) or []:
        field = question.get("field")
        if isinstance(field, str) and field not in seen:
            seen.add(field)
            out.append({"field": field, "reason": str(question.get("reason", ""))})
    if result.get("red_flag_screening") == "incomplete":
        for field in result.get("missing", []):
            if field.startswith(RED_FLAG_PREFIX) and field not in seen:
                seen.add(field)
                out.append({"field": field, "reason": RED_FLAG_REASON})
    return out


def _subject(result: Mapping[str, Any]) -> dict[str, Any]:
    if "patient_id" in result:
        if not is_fhir_string(result["patient_id"]):  # never drop an id silently: results could be mixed up
            raise PatientDataError("$.patient_id", FHIR_STRING_EXPECTED, describe_value(result["patient_id"]),
                                   "a FHIR resource cannot carry this patient_id")
        return {"identifier": {"system": PATIENT_ID_SYSTEM, "value": result["patient_id"]}}
    return {"display": "the patient assessed"}


def guidance_bundle(result: Mapping[str, Any]) -> dict[str, Any]:
    """The FHIR R4 Bundle for one result document (`Assessment.to_dict()`).

    Raises PatientDataError for a patient_id FHIR cannot carry (e.g. an empty string).
    """
    key = canonical(result)

    def new_id(kind: str, index: int = 0) -> str:
        return str(uuid.uuid5(NAMESPACE, f"{kind}|{index}|{key}"))

    rule_set = result["rule_set"]
    module = rule_set_uri(rule_set)
    set_ext = _rule_set_ext(rule_set)
    subject = _subject(result)
    entries: list[dict[str, Any]] = []

    def add(resource: dict[str, Any]) -> str:
        url = f"urn:uuid:{resource['id']}"
        entries.append({"fullUrl": url, "resource": resource})
        return url

    guidance_id, group_id, plan_id = new_id("GuidanceResponse"), new_id("RequestGroup"), new_id("CarePlan")
    questions = open_questions(result)
    guidance: dict[str, Any] = {
        "resourceType": "GuidanceResponse",
        "id": guidance_id,
        "extension": [set_ext, {"url": EXT_URGENCY, "valueCode": result["urgency"]},
                      {"url": EXT_SCREENING, "valueCode": result["red_flag_screening"]}],
        "requestIdentifier": {"system": f"{BASE}/result", "value": guidance_id},
        "moduleUri": module,
        "status": "data-required" if questions else "success",
    }
    if "patient_id" in result:
        guidance["subject"] = subject
    guidance["result"] = {"reference": f"urn:uuid:{group_id}"}
    if questions:
        guidance["dataRequirement"] = [
            {"extension": [{"url": EXT_QUESTION, "valueString": q["reason"]}] if q["reason"] else [],
             "type": "QuestionnaireResponse", "mustSupport": [q["field"]]}
            for q in questions]
        for requirement in guidance["dataRequirement"]:
            if not requirement["extension"]:
                del requirement["extension"]
    add(guidance)

    findings = []
    for finding in result["findings"]:
        extension = _rule_ext(finding["rule"], rule_set)
        if "side" in finding:
            extension.append({"url": EXT_SIDE, "valueCode": finding["side"]})
        findings.append({"extension": extension, "title": finding["text"],
                         "code": [{"coding": [{"system": FINDING_SYSTEM, "code": finding["code"]}]}]})

    advice = []
    referrals: list[dict[str, Any]] = []
    for index, card in enumerate(result["cards"]):
        action: dict[str, Any] = {
            "extension": _rule_ext(card["rule"], rule_set),
            "id": card["uuid"], "title": card["summary"], "description": card["detail"],
            "documentation": [{"type": "citation", "label": card["source"]["section"],
                               "display": card["source"]["label"], "citation": card["source"]["quote"]}],
        }
        referral = card.get("referral")
        if referral is not None:
            action["priority"] = PRIORITY[referral["timeframe"]]
            to = " or ".join(referral["to"])
            request = {
                "resourceType": "ServiceRequest", "id": new_id("ServiceRequest", index),
                "extension": _rule_ext(card["rule"], rule_set),
                "instantiatesUri": [module], "status": "draft", "intent": "proposal",
                "priority": PRIORITY[referral["timeframe"]],
                "code": {"text": f"Referral to {to} ({referral['timeframe']})"},
                "subject": subject, "performerType": {"text": to}, "reasonCode": [{"text": referral["reason"]}],
            }
            referrals.append(request)
            action["resource"] = {"reference": f"urn:uuid:{request['id']}"}
        advice.append(action)

    plan = result["plan"]
    plan_extension = [set_ext, {"url": EXT_PLAN_STATUS, "valueCode": plan["status"]}]
    if plan["phase"] is not None:
        plan_extension.append({"url": EXT_PHASE, "valueCode": plan["phase"]})
    care_plan: dict[str, Any] = {
        "resourceType": "CarePlan", "id": plan_id, "extension": plan_extension, "instantiatesUri": [module],
        "status": "draft", "intent": "proposal", "title": "Exercise plan",
        "description": {"recommended": "Exercise plan recommended by the rules.",
                        "withheld": "Exercise advice withheld: a red flag is present.",
                        "pending-screening": "Exercise advice pending: red-flag screening is incomplete."
                        }.get(plan["status"], f"Exercise plan: {plan['status']}."),
        "subject": subject,
    }
    activities = []
    for exercise in plan["exercises"]:
        sets, reps = exercise["sets"], exercise["reps"]
        activities.append({"detail": {
            "code": {"coding": [{"system": EXERCISE_SYSTEM, "code": exercise["id"], "display": exercise["name"]}],
                     "text": exercise["name"]},
            "status": "not-started",
            "description": (f"{sets['min']}-{sets['max']} sets of {reps['min']}-{reps['max']} repetitions "
                            f"(targets: {', '.join(exercise['targets'])}). {exercise['instructions']}")}})
    if activities:
        care_plan["activity"] = activities
    if plan["notes"]:
        care_plan["note"] = [{"text": note} for note in plan["notes"]]

    actions: list[dict[str, Any]] = []
    if findings:
        actions.append({"title": "Findings", "action": findings})
    if advice:
        actions.append({"title": "Advice", "priority": URGENCY_PRIORITY[result["urgency"]], "action": advice})
    actions.append({"title": "Plan", "description": care_plan["description"],
                    "resource": {"reference": f"urn:uuid:{plan_id}"}})
    request_group: dict[str, Any] = {
        "resourceType": "RequestGroup", "id": group_id, "extension": [set_ext], "instantiatesUri": [module],
        "status": "draft", "intent": "proposal", "priority": URGENCY_PRIORITY[result["urgency"]],
    }
    if "patient_id" in result:
        request_group["subject"] = subject
    request_group["action"] = actions
    add(request_group)
    add(care_plan)
    for request in referrals:
        add(request)
    return {"resourceType": "Bundle", "id": new_id("Bundle"), "type": "collection", "entry": entries}
