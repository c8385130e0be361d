"""The R4 Questionnaire generated from schemas/patient.schema.json: one item per patient field.

linkId = the field's dotted path; groups follow the schema's objects. Tri-state questions are
`choice` items answered Yes / No / Unknown (LOINC), because a boolean item cannot say
"unknown" and unknown must never turn into no. Enums are `choice` items on a local code system
whose codes are the schema's values (plus Unknown); integers carry the schema's bounds.
"""

from __future__ import annotations

import re
from typing import Any

from ..model import RuleSetInfo
from .common import (
    ITEM_CODES, MAX_VALUE, MIN_VALUE, OBSERVATION_EXTRACT, TRISTATE_CODINGS, UNKNOWN, Node, code_system_url,
    questionnaire_url, rule_set_uri, schema_items,
)


def _fhir_id(text: str) -> str:
    """A valid FHIR id ([A-Za-z0-9-.]{1,64}) derived from the rule set id."""
    return (re.sub(r"[^A-Za-z0-9.-]", "-", text) or "cdss")[:64]


def _item(node: Node) -> dict[str, Any]:
    item: dict[str, Any] = {"linkId": node.link_id}
    code = ITEM_CODES.get(node.link_id)
    if code is not None:
        item["extension"] = [{"url": OBSERVATION_EXTRACT, "valueBoolean": True}]
        item["code"] = [dict(code)]
    item["text"] = node.text
    if node.kind == "group":
        item["type"] = "group"
        item["item"] = [_item(child) for child in node.children]
        return item
    if node.kind == "tristate":
        item["type"] = "choice"
        item["answerOption"] = [{"valueCoding": dict(coding)} for _, coding in TRISTATE_CODINGS]
    elif node.kind == "enum":
        item["type"] = "choice"
        system = code_system_url(node.link_id)
        item["answerOption"] = [{"valueCoding": {"system": system, "code": value, "display": value}}
                                for value in node.values] + [{"valueCoding": dict(UNKNOWN)}]
    elif node.kind == "integer":
        item["type"] = "integer"
        bounds = [(MIN_VALUE, node.minimum), (MAX_VALUE, node.maximum)]
        extensions = [{"url": url, "valueInteger": value} for url, value in bounds if value is not None]
        if extensions:
            item["extension"] = item.get("extension", []) + extensions
    elif node.kind == "string":
        item["type"] = "string"
        if node.max_length is not None:
            item["maxLength"] = node.max_length
    item["repeats"] = False
    return item


def questionnaire(info: RuleSetInfo) -> dict[str, Any]:
    """The Questionnaire (FHIR R4 JSON) for the rule set `info` (`RuleSet.info`); deterministic.

    Its `url|version` is what every QuestionnaireResponse must name; the version is the rule
    set version, and the rule set digest is an identifier, so a form can be traced to the rules.
    """
    return {
        "resourceType": "Questionnaire",
        "id": _fhir_id(info.id),
        "url": questionnaire_url(info),
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": f"{rule_set_uri(info)}#{info.digest}"}],
        "version": info.version,
        "name": "CdssPatientQuestions",
        "title": f"{info.title}: patient questions",
        "status": "active",
        "subjectType": ["Patient"],
        "description": ("Every question of the cdss patient document. Each yes/no question may be answered Unknown; "
                        "an unanswered or Unknown question is unknown to the rules, never no."),
        "item": [_item(node) for node in schema_items()],
    }
