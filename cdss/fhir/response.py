"""QuestionnaireResponse -> patient document (strict), and back (for tests and hosts).

Strict because a silent misreading is a clinical risk: an unknown linkId, a linkId in the
wrong group or given twice, a wrong answer type, a response to another Questionnaire
(url|version), or a status other than completed/amended is a PatientDataError naming the
linkId, what was expected and what was found. A question left out is absent; a question
answered Unknown (or given without an answer) is null: both are unknown, never "no".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import PatientDataError, describe_value
from .common import (
    FHIR_STRING_EXPECTED, LOINC, TRISTATE_CODINGS, UNKNOWN, Node, code_system_url, is_fhir_string, items_by_link_id,
    questionnaire_canonical, schema_items,
)

MAX_ITEMS = 500
"""The Questionnaire has a few dozen items; a response with more is the wrong document (or an attack)."""

ACCEPTED_STATUS = ("completed", "amended")
ITEM_KEYS = frozenset({"id", "extension", "linkId", "definition", "text", "answer", "item"})
ANSWER_KEYS = frozenset({"id", "extension"})
TOP_KEYS = frozenset({"resourceType", "id", "meta", "implicitRules", "language", "text", "contained", "extension",
                      "identifier", "basedOn", "partOf", "questionnaire", "status", "subject", "encounter",
                      "authored", "author", "source", "item"})
_BY_CODE = {coding["code"]: value for value, coding in TRISTATE_CODINGS}
_TRISTATE_EXPECTED = "an answer valueCoding Yes (LOINC LA33-6), No (LA32-8) or Unknown (LA4489-6)"


def _rules_info(rules: Any) -> Any:
    if rules is None:
        from .. import bundled_rules

        rules = bundled_rules()
    return getattr(rules, "info", rules)  # a RuleSet or its RuleSetInfo


def _where(link_id: Any) -> str:
    if isinstance(link_id, str) and len(link_id) <= 80 and link_id.isprintable():
        return f"linkId '{link_id}'"
    return f"linkId {describe_value(link_id)}"


class _Reader:
    def __init__(self) -> None:
        self.count = 0
        self.seen: set[str] = set()

    def items(self, items: Any, allowed: tuple[Node, ...], where: str, parent: str | None) -> dict[str, Any]:
        if not isinstance(items, list):
            raise PatientDataError(where, "a list of items", describe_value(items))
        if self.count + len(items) > MAX_ITEMS:  # refuse a flood before reading any of it
            raise PatientDataError("QuestionnaireResponse.item", f"at most {MAX_ITEMS} items in all",
                                   f"{self.count + len(items):,} items", "is this a response to the cdss Questionnaire?")
        by_key = {node.link_id: node for node in allowed}
        out: dict[str, Any] = {}
        for index, item in enumerate(items):
            self.count += 1
            if not isinstance(item, dict):
                raise PatientDataError(f"{where}[{index}]", "an item (a JSON object)", describe_value(item))
            link_id = item.get("linkId")
            if not isinstance(link_id, str):
                raise PatientDataError(f"{where}[{index}].linkId", "a linkId (text)", describe_value(link_id))
            at = _where(link_id)
            node = by_key.get(link_id)
            if node is None:
                known = items_by_link_id().get(link_id)
                if known is not None:
                    inside = f"inside the group '{parent}'" if parent else "at the top level"
                    raise PatientDataError(at, f"an item {inside} of the Questionnaire", "it in the wrong place",
                                           f"'{link_id}' belongs {_home(link_id)}")
                choices = ", ".join(sorted(by_key)) or "none"
                raise PatientDataError(at, f"one of the linkIds of the Questionnaire here ({choices})",
                                       "an unknown linkId")
            if link_id in self.seen:
                raise PatientDataError(at, "each linkId at most once", "it repeated",
                                       "one answer per question: merge the repeated items")
            self.seen.add(link_id)
            unknown_keys = sorted(str(k) for k in item if k not in ITEM_KEYS)
            if unknown_keys:
                hint = ("a modifier extension changes the meaning of an answer and cdss cannot read it"
                        if "modifierExtension" in unknown_keys else None)
                raise PatientDataError(at, f"an item with only {', '.join(sorted(ITEM_KEYS))}",
                                       f"'{_shown(unknown_keys[0])}'", hint)
            out[node.key] = self.group(item, node, at) if node.kind == "group" else self.question(item, node, at)
        return out

    def group(self, item: dict[str, Any], node: Node, at: str) -> dict[str, Any]:
        if "answer" in item:
            raise PatientDataError(at, "a group (items, no answer)", "an answer")
        return self.items(item.get("item", []), node.children, f"{at}.item", node.link_id)

    def question(self, item: dict[str, Any], node: Node, at: str) -> Any:
        if "item" in item:
            raise PatientDataError(at, "a question (an answer, no nested items)", "nested items")
        answers = item.get("answer", [])
        if not isinstance(answers, list):
            raise PatientDataError(at, "answer as a list", describe_value(answers))
        if not answers:
            return None  # asked, not answered: unknown
        if len(answers) > 1:
            raise PatientDataError(at, "one answer", f"{len(answers)} answers")
        answer = answers[0]
        if not isinstance(answer, dict):
            raise PatientDataError(at, "an answer object", describe_value(answer))
        if "item" in answer:
            raise PatientDataError(at, "an answer without nested items", "items nested under the answer")
        values = [k for k in answer if k not in ANSWER_KEYS]
        if len(values) != 1 or not isinstance(values[0], str) or not values[0].startswith("value"):
            found = "no value" if not values else f"'{_shown(values[0])}'" if len(values) == 1 else "several values"
            raise PatientDataError(at, _expected(node), found)
        kind, value = values[0], answer[values[0]]
        if node.kind == "tristate":
            return _coded(at, kind, value, {LOINC: _BY_CODE}, _TRISTATE_EXPECTED)
        if node.kind == "enum":
            codes = {code: code for code in node.values}
            return _coded(at, kind, value, {code_system_url(node.link_id): codes, LOINC: {UNKNOWN["code"]: None}},
                          _expected(node))
        if node.kind == "integer":
            if kind != "valueInteger" or type(value) is not int:
                raise PatientDataError(at, _expected(node), _found(kind, value))
            if (node.minimum is not None and value < node.minimum) or (node.maximum is not None and value > node.maximum):
                raise PatientDataError(at, _expected(node), describe_value(value))
            return value
        if kind != "valueString" or not isinstance(value, str):
            raise PatientDataError(at, _expected(node), _found(kind, value))
        if node.max_length is not None and len(value) > node.max_length:
            raise PatientDataError(at, _expected(node), f"a string of {len(value):,} characters")
        if not is_fhir_string(value):
            raise PatientDataError(at, FHIR_STRING_EXPECTED, describe_value(value))
        return value


def _home(link_id: str) -> str:
    parent = link_id.rpartition(".")[0]
    return f"inside the group '{parent}'" if parent else "at the top level"


def _shown(key: Any) -> str:
    text = str(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _expected(node: Node) -> str:
    if node.kind == "tristate":
        return _TRISTATE_EXPECTED
    if node.kind == "enum":
        return (f"an answer valueCoding from {code_system_url(node.link_id)} ({', '.join(node.values)}) "
                "or Unknown (LOINC LA4489-6)")
    if node.kind == "integer":
        return f"an answer valueInteger from {node.minimum} to {node.maximum}"
    return f"an answer valueString of at most {node.max_length} characters"


def _found(kind: str, value: Any) -> str:
    return f"{kind} {describe_value(value)}" if kind in ("valueInteger", "valueString") else kind


def _coded(at: str, kind: str, value: Any, systems: dict[str, dict[str, Any]], expected: str) -> Any:
    if kind != "valueCoding":
        raise PatientDataError(at, expected, kind, "a yes/no question is answered with a coding, so that "
                               "Unknown can be said" if kind == "valueBoolean" else None)
    if not isinstance(value, dict):
        raise PatientDataError(at, expected, f"valueCoding {describe_value(value)}")
    system, code = value.get("system"), value.get("code")
    codes = systems.get(system) if isinstance(system, str) else None
    if codes is None or not isinstance(code, str) or code not in codes:
        raise PatientDataError(at, expected, f"the coding {_shown(system)}|{_shown(code)}")
    return codes[code]


def patient_from_questionnaire_response(resource: Mapping[str, Any], rules: Any = None, *,
                                        allow_in_progress: bool = False) -> dict[str, Any]:
    """The patient document a QuestionnaireResponse (FHIR R4 JSON) answers; strict.

    `rules`: the RuleSet (or its info) whose Questionnaire was answered; default: the bundled
    rules. Raises PatientDataError (path = the linkId or the QuestionnaireResponse element).
    """
    if not isinstance(resource, Mapping):
        raise PatientDataError("$", "a QuestionnaireResponse (a JSON object)", describe_value(resource))
    if resource.get("resourceType") != "QuestionnaireResponse":
        raise PatientDataError("$.resourceType", "QuestionnaireResponse (or a plain patient document)",
                               describe_value(resource.get("resourceType")))
    unknown_keys = sorted(str(k) for k in resource if k not in TOP_KEYS)
    if unknown_keys:
        hint = ("a modifier extension changes the meaning of the response and cdss cannot read it"
                if "modifierExtension" in unknown_keys else None)
        raise PatientDataError(f"QuestionnaireResponse.{_shown(unknown_keys[0])}",
                               "only the elements of an R4 QuestionnaireResponse", "an element cdss does not read", hint)
    info = _rules_info(rules)
    expected = questionnaire_canonical(info)
    named = resource.get("questionnaire")
    if named != expected:
        found = describe_value(named) if not isinstance(named, str) else (
            f"'{named}'" if len(named) <= 200 and named.isprintable() else f"a string of {len(named):,} characters")
        raise PatientDataError("QuestionnaireResponse.questionnaire", f"'{expected}'", found,
                               "answer the Questionnaire of these rules: cdss fhir questionnaire")
    status = resource.get("status")
    accepted = ACCEPTED_STATUS + (("in-progress",) if allow_in_progress else ())
    if status not in accepted:
        hint = ("an unfinished form may leave red-flag questions unanswered; "
                "use --allow-in-progress (allow_in_progress=True) to evaluate it anyway"
                if status == "in-progress" else None)
        raise PatientDataError("QuestionnaireResponse.status", " or ".join(accepted), describe_value(status), hint)
    document = _Reader().items(resource.get("item", []), schema_items(), "QuestionnaireResponse.item", None)
    from ..patient import validate_patient

    return validate_patient(document)  # always valid by construction; checked to be sure


def as_patient_document(document: Any, rules: Any = None, *, allow_in_progress: bool = False) -> Any:
    """The one place a FHIR resource is recognised (by `resourceType`): the patient document it
    carries, or `document` unchanged when it is not a FHIR resource."""
    if isinstance(document, Mapping) and "resourceType" in document:
        return patient_from_questionnaire_response(document, rules, allow_in_progress=allow_in_progress)
    return document


def _answer(node: Node, value: Any) -> list[dict[str, Any]]:
    if node.kind == "tristate":
        return [{"valueCoding": dict(next(coding for answer, coding in TRISTATE_CODINGS if answer is value))}]
    if value is None:
        return [{"valueCoding": dict(UNKNOWN)}] if node.kind == "enum" else []
    if node.kind == "enum":
        return [{"valueCoding": {"system": code_system_url(node.link_id), "code": value, "display": value}}]
    if node.kind == "integer":
        return [{"valueInteger": value}]
    return [{"valueString": value}]


def _response_items(data: Mapping[str, Any], nodes: tuple[Node, ...]) -> list[dict[str, Any]]:
    out = []
    for node in nodes:
        if node.key not in data:
            continue  # not asked: left out, which reads back as absent
        value = data[node.key]
        item: dict[str, Any] = {"linkId": node.link_id, "text": node.text}
        if node.kind == "group":
            children = _response_items(value, node.children)
            if children:  # FHIR JSON has no empty arrays: an empty section is a group without items
                item["item"] = children
        else:
            answers = _answer(node, value)
            if answers:
                item["answer"] = answers
        out.append(item)
    return out


def questionnaire_response_from_patient(patient: Mapping[str, Any], rules: Any = None) -> dict[str, Any]:
    """A completed QuestionnaireResponse carrying exactly this patient document (validated first).

    The inverse of `patient_from_questionnaire_response`: null is answered Unknown (an integer
    or text question is given without an answer), an absent key is left out.
    """
    from ..patient import validate_patient

    document = validate_patient(patient)
    if "patient_id" in document and not is_fhir_string(document["patient_id"]):
        raise PatientDataError("$.patient_id", FHIR_STRING_EXPECTED, describe_value(document["patient_id"]),
                               "a FHIR resource cannot carry this patient_id")
    return {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": questionnaire_canonical(_rules_info(rules)),
        "status": "completed",
        "item": _response_items(document, schema_items()),
    }
