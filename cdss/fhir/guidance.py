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
PRIORITY = {"immediately": "stat", "soon": "urgent", "within-weeks": "routine", "routine": "routine"}
"""Referral timeframe -> FHIR request priority. A referral within N weeks is routine with a deadline (the
deadline goes in occurrenceTiming and a note), not "urgent"; only an emergency is "stat". `soon` is from
older rule sets."""
UCUM = "http://unitsofmeasure.org"
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


def _data_requirement(question: Mapping[str, str]) -> dict[str, Any]:
    """One open question: the QuestionnaireResponse item (by linkId) that must be answered, and why."""
    requirement: dict[str, Any] = {}
    if question["reason"]:
        requirement["extension"] = [{"url": EXT_QUESTION, "valueString": question["reason"]}]
    requirement["type"] = "QuestionnaireResponse"
    requirement["mustSupport"] = [question["field"]]
    return requirement


def _subject(result: Mapping[str, Any]) -> dict[str, Any]:
    if "patient_id" in result:
        if not is_fhir_string(result["patient_id"]):  # never drop an id silently: results could be mixed up
            raise PatientDataError("$.patient_id", FHIR_STRING_EXPECTED, describe_value(result["patient_id"]),
                                   "a FHIR resource cannot carry this patient_id")
        return {"identifier": {"system": PATIENT_ID_SYSTEM, "value": result["patient_id"]}}
    return {"display": "the patient assessed"}


PLAN_DESCRIPTION = {
    "recommended": "Exercise plan recommended by the rules.",
    "withheld": "Exercise advice withheld: a red flag is present.",
    "pending-screening": "Exercise advice pending: red-flag screening is incomplete.",
    "pending-answers": "No exercise plan yet: the questions the plan depends on are unanswered.",  # issue 17
    "not-indicated": "No exercise plan needed on these answers.",  # issue 17
}


class _Bundle:
    """The resources of one result; every id is derived from the result's canonical JSON."""

    def __init__(self, result: Mapping[str, Any]) -> None:
        self.result = result
        self.key = canonical(result)
        self.rule_set = result["rule_set"]
        self.module = rule_set_uri(self.rule_set)
        self.set_ext = _rule_set_ext(self.rule_set)
        self.subject = _subject(result)
        self.priority = URGENCY_PRIORITY[result["urgency"]]

    def new_id(self, kind: str, index: int = 0) -> str:
        return str(uuid.uuid5(NAMESPACE, f"{kind}|{index}|{self.key}"))

    def guidance_response(self, group_id: str) -> dict[str, Any]:
        result = self.result
        questions = open_questions(result)
        guidance_id = self.new_id("GuidanceResponse")
        guidance: dict[str, Any] = {
            "resourceType": "GuidanceResponse",
            "id": guidance_id,
            "extension": [self.set_ext, {"url": EXT_URGENCY, "valueCode": result["urgency"]},
                          {"url": EXT_SCREENING, "valueCode": result["red_flag_screening"]}],
            "requestIdentifier": {"system": f"{BASE}/result", "value": guidance_id},
            "moduleUri": self.module,
            "status": "data-required" if questions else "success",
        }
        if "patient_id" in result:
            guidance["subject"] = self.subject
        guidance["result"] = {"reference": f"urn:uuid:{group_id}"}
        if questions:
            guidance["dataRequirement"] = [_data_requirement(q) for q in questions]
        return guidance

    def findings(self) -> list[dict[str, Any]]:
        actions = []
        for finding in self.result["findings"]:
            extension = _rule_ext(finding["rule"], self.rule_set)
            if "side" in finding:
                extension.append({"url": EXT_SIDE, "valueCode": finding["side"]})
            actions.append({"extension": extension, "title": finding["text"],
                            "code": [{"coding": [{"system": FINDING_SYSTEM, "code": finding["code"]}]}]})
        return actions

    def advice(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """One action per card, and the ServiceRequest of each referral card."""
        actions: list[dict[str, Any]] = []
        referrals: list[dict[str, Any]] = []
        for index, card in enumerate(self.result["cards"]):
            action: dict[str, Any] = {
                "extension": _rule_ext(card["rule"], self.rule_set),
                "id": card["uuid"], "title": card["summary"], "description": card["detail"],
                "documentation": [{"type": "citation", "label": card["source"]["section"],
                                   "display": card["source"]["label"], "citation": card["source"]["quote"]}],
            }
            referral = card.get("referral")
            if referral is not None:
                request = self.service_request(card["rule"], referral, index)
                referrals.append(request)
                action["priority"] = request["priority"]
                action["resource"] = {"reference": f"urn:uuid:{request['id']}"}
            actions.append(action)
        return actions, referrals

    def service_request(self, rule: str, referral: Mapping[str, Any], index: int) -> dict[str, Any]:
        to = " or ".join(referral["to"])
        when = referral.get("within") or referral["timeframe"]
        request: dict[str, Any] = {
            "resourceType": "ServiceRequest", "id": self.new_id("ServiceRequest", index),
            "extension": _rule_ext(rule, self.rule_set),
            "instantiatesUri": [self.module], "status": "draft", "intent": "proposal",
            "priority": PRIORITY[referral["timeframe"]],
            "code": {"text": f"Referral to {to} ({when})"},
            "subject": self.subject,
        }
        if isinstance(referral.get("weeks"), int):  # the deadline: within N weeks of this assessment
            request["occurrenceTiming"] = {"repeat": {"boundsDuration": {
                "value": referral["weeks"], "unit": "weeks", "system": UCUM, "code": "wk"}}}
        request["performerType"] = {"text": to}
        request["reasonCode"] = [{"text": referral["reason"]}]
        if referral.get("within"):
            request["note"] = [{"text": f"See {to} {referral['within']}."}]
        return request

    def care_plan(self) -> dict[str, Any]:
        plan = self.result["plan"]
        extension = [self.set_ext, {"url": EXT_PLAN_STATUS, "valueCode": plan["status"]}]
        if plan["phase"] is not None:
            extension.append({"url": EXT_PHASE, "valueCode": plan["phase"]})
        care_plan: dict[str, Any] = {
            "resourceType": "CarePlan", "id": self.new_id("CarePlan"), "extension": extension,
            "instantiatesUri": [self.module], "status": "draft", "intent": "proposal", "title": "Exercise plan",
            "description": PLAN_DESCRIPTION.get(plan["status"], f"Exercise plan: {plan['status']}."),
            "subject": self.subject,
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
        return care_plan

    def request_group(self, findings: list[dict[str, Any]], advice: list[dict[str, Any]],
                      care_plan: dict[str, Any]) -> dict[str, Any]:
        actions: list[dict[str, Any]] = []
        if findings:
            actions.append({"title": "Findings", "action": findings})
        if advice:
            actions.append({"title": "Advice", "priority": self.priority, "action": advice})
        actions.append({"title": "Plan", "description": care_plan["description"],
                        "resource": {"reference": f"urn:uuid:{care_plan['id']}"}})
        group: dict[str, Any] = {
            "resourceType": "RequestGroup", "id": self.new_id("RequestGroup"), "extension": [self.set_ext],
            "instantiatesUri": [self.module], "status": "draft", "intent": "proposal", "priority": self.priority,
        }
        if "patient_id" in self.result:
            group["subject"] = self.subject
        group["action"] = actions
        return group


def guidance_bundle(result: Mapping[str, Any]) -> dict[str, Any]:
    """The FHIR R4 Bundle for one result document (`Assessment.to_dict()`).

    Raises PatientDataError for a patient_id FHIR cannot carry (e.g. an empty string).
    """
    bundle = _Bundle(result)
    advice, referrals = bundle.advice()
    care_plan = bundle.care_plan()
    group = bundle.request_group(bundle.findings(), advice, care_plan)
    resources = [bundle.guidance_response(group["id"]), group, care_plan, *referrals]
    return {"resourceType": "Bundle", "id": bundle.new_id("Bundle"), "type": "collection",
            "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in resources]}
