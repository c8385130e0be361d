"""What the FHIR modules share: canonical URLs, the codes (each one verified, see docs/FHIR.md),
and the patient schema walked into Questionnaire-shaped nodes (groups and questions)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

from ..model import RuleSetInfo
from ..resources import schema

BASE = "https://cdss.invalid/fhir"
"""Root of every canonical URL cdss mints (`.invalid`: a host that can never resolve to someone else's)."""

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
YES = {"system": LOINC, "code": "LA33-6", "display": "Yes"}
NO = {"system": LOINC, "code": "LA32-8", "display": "No"}
UNKNOWN = {"system": LOINC, "code": "LA4489-6", "display": "Unknown"}
TRISTATE_CODINGS = ((True, YES), (False, NO), (None, UNKNOWN))

OBSERVATION_EXTRACT = "http://hl7.org/fhir/uv/sdc/StructureDefinition/sdc-questionnaire-observationExtract"
MIN_VALUE = "http://hl7.org/fhir/StructureDefinition/minValue"
MAX_VALUE = "http://hl7.org/fhir/StructureDefinition/maxValue"

ITEM_CODES: dict[str, dict[str, str]] = {
    "back_pain.present": {"system": SNOMED, "code": "279039007", "display": "Low back pain"},
}
"""Standard codes for questions, only where one was verified to mean exactly the question
(docs/FHIR.md lists them with where each was checked); every other item is left uncoded."""

EXT_RULE = f"{BASE}/StructureDefinition/rule"
EXT_RULE_SET = f"{BASE}/StructureDefinition/rule-set"
EXT_URGENCY = f"{BASE}/StructureDefinition/urgency"
EXT_SCREENING = f"{BASE}/StructureDefinition/red-flag-screening"
EXT_PLAN_STATUS = f"{BASE}/StructureDefinition/plan-status"
EXT_PHASE = f"{BASE}/StructureDefinition/exercise-phase"
EXT_SIDE = f"{BASE}/StructureDefinition/side"
EXT_QUESTION = f"{BASE}/StructureDefinition/question-reason"
PATIENT_ID_SYSTEM = f"{BASE}/patient-id"


FHIR_STRING = re.compile(r"[ \r\n\t\S]+")
"""The FHIR R4 `string` datatype: not empty, and no whitespace other than space, tab and line breaks."""
FHIR_STRING_EXPECTED = "text FHIR can carry (not empty; no whitespace but space, tab and line breaks)"


def is_fhir_string(value: str) -> bool:
    """Whether `value` is a valid FHIR string (a patient_id may be text FHIR cannot carry)."""
    return FHIR_STRING.fullmatch(value) is not None


def questionnaire_url(info: RuleSetInfo) -> str:
    """The canonical URL of the Questionnaire for a rule set (its version is the rule set version)."""
    return f"{BASE}/Questionnaire/{info.id}"


def questionnaire_canonical(info: RuleSetInfo) -> str:
    """`url|version`: what `QuestionnaireResponse.questionnaire` must say, exactly."""
    return f"{questionnaire_url(info)}|{info.version}"


def rule_set_uri(info: Any) -> str:
    """The rule set as a URI (`info` is a RuleSetInfo or the result's `rule_set` dict)."""
    id_, version = (info["id"], info["version"]) if isinstance(info, dict) else (info.id, info.version)
    return f"{BASE}/rule-sets/{id_}/{version}"


def code_system_url(path: str) -> str:
    """The local code system of an enum field: its codes are the schema's values."""
    return f"{BASE}/CodeSystem/{path.replace('.', '-').replace('_', '-')}"


@dataclass(frozen=True)
class Node:
    """One item of the Questionnaire: a group (a schema object) or a question (a leaf)."""

    link_id: str  # the dotted path in the patient document
    key: str  # the last part of the path
    kind: str  # group | tristate | enum | integer | string
    text: str
    children: tuple[Node, ...] = ()
    values: tuple[str, ...] = ()
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None


def _title(key: str) -> str:
    words = key.replace("_", " ")
    return words[:1].upper() + words[1:]


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in node:
        target = defs[node["$ref"].rsplit("/", 1)[-1]]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _walk(node: dict[str, Any], defs: dict[str, Any], prefix: str) -> tuple[Node, ...]:
    out = []
    for key, prop in node.get("properties", {}).items():
        prop = _resolve(prop, defs)
        path = f"{prefix}{key}"
        types = prop.get("type")
        types = [types] if isinstance(types, str) else (types or [])
        text = prop.get("title") or prop.get("description") or _title(key)
        if "properties" in prop:
            title = prop.get("title") or _title(key)
            if prop.get("description"):
                title += f": {prop['description']}"
            out.append(Node(path, key, "group", title, _walk(prop, defs, path + ".")))
        elif "enum" in prop:
            out.append(Node(path, key, "enum", text, values=tuple(v for v in prop["enum"] if v is not None)))
        elif "boolean" in types:
            out.append(Node(path, key, "tristate", text))
        elif "integer" in types:
            out.append(Node(path, key, "integer", text, minimum=prop.get("minimum"), maximum=prop.get("maximum")))
        elif "string" in types:
            out.append(Node(path, key, "string", text, max_length=prop.get("maxLength")))
        else:  # a schema construct this mapping does not know: fail loudly, never drop a question
            raise NotImplementedError(f"cdss.fhir cannot map the patient schema property {path!r} to a Questionnaire item")
    return tuple(out)


@cache
def schema_items() -> tuple[Node, ...]:
    """The patient schema as Questionnaire items, in schema order."""
    root = schema("patient")
    return _walk(root, root.get("$defs", {}), "")


@cache
def items_by_link_id() -> dict[str, Node]:
    """Every item (groups and questions) by linkId."""
    out: dict[str, Node] = {}

    def visit(nodes: tuple[Node, ...]) -> None:
        for node in nodes:
            out[node.link_id] = node
            visit(node.children)

    visit(schema_items())
    return out
