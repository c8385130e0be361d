"""Turn the set of fired rules into the result document of CONTRACTS.md, deterministically."""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any

from .fields import patient_fields
from .model import INDICATOR_ORDER, URGENCY_ORDER, Rule, RuleSetInfo

CARD_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://cdss.invalid/cards")
EXTENSION_KEY = "invalid.cdss"
RED_FLAG_PREFIX = "red_flags."
_PLACEHOLDER = re.compile(r"\{\{\s*params\.([A-Za-z0-9_]+)\s*\}\}")


def red_flag_screening(fact: Mapping[str, Any]) -> str:
    """positive if any red flag is yes, negative if all are no, incomplete otherwise."""
    values = [fact[f.key] for f in patient_fields().values() if f.path.startswith(RED_FLAG_PREFIX)]
    if "true" in values:
        return "positive"
    if all(v == "false" for v in values):
        return "negative"
    return "incomplete"


PLAN_STATUS = {"negative": "recommended", "positive": "withheld", "incomplete": "pending-screening"}
PLAN_NOTE = {
    "positive": "Exercise advice is withheld: a red flag is present. Seek immediate medical attention first.",
    "incomplete": "Exercise advice is pending: the red-flag questions listed under missing must be answered first.",
}


def render(text: str, params: Mapping[str, Any]) -> str:
    """Fill `{{ params.NAME }}` placeholders (names were checked by the loader)."""
    return _PLACEHOLDER.sub(lambda m: _show(params[m.group(1)]), text)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _bound(value: Any, params: Mapping[str, Any]) -> Any:
    return params[value["param"]] if isinstance(value, dict) else value


def card_order(rule: Rule) -> tuple[int, int, str]:
    """critical → warning → info, then priority high first, then rule id."""
    return INDICATOR_ORDER.index(rule.indicator), -rule.priority, rule.id


def canonical(data: Any) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def assemble(*, info: RuleSetInfo, version: str, rules: Mapping[str, Rule], fired: set[str],
             fact: Mapping[str, Any], unknown: list[str], needed: frozenset[str], params: Mapping[str, Any], params_key: str,
             patient: Mapping[str, Any], trace: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Build the result dict (key order as in the contract)."""
    screening = red_flag_screening(fact)
    status = PLAN_STATUS[screening]
    fired_rules = sorted((rules[rule_id] for rule_id in fired), key=card_order)
    shown = [r for r in fired_rules if status == "recommended" or not r.gated_by_screening]
    urgency = max((URGENCY_ORDER.index(r.urgency) for r in fired_rules), default=0)

    findings = []
    for rule in sorted(fired_rules, key=lambda r: (-r.priority, r.id)):
        finding = rule.then.get("finding")
        if finding:
            item: dict[str, Any] = {"rule": rule.id, "code": finding["code"]}
            if "side" in finding:
                item["side"] = finding["side"]
            item["text"] = render(finding["text"], params)
            findings.append(item)

    plan: dict[str, Any] = {"status": status, "phase": None, "exercises": [], "notes": []}
    if status == "recommended":
        by_priority = sorted(fired_rules, key=lambda r: (-r.priority, r.id))
        phases = [r.then["plan"]["phase"] for r in by_priority if "phase" in r.then.get("plan", {})]
        plan["phase"] = phases[0] if phases else None
        for rule in by_priority:
            exercise = rule.then.get("exercise")
            if exercise:
                plan["exercises"].append({
                    "id": exercise["id"], "name": exercise["name"], "targets": list(exercise["targets"]),
                    "sets": {"min": _bound(exercise["sets"]["min"], params), "max": _bound(exercise["sets"]["max"], params)},
                    "reps": {"min": _bound(exercise["reps"]["min"], params), "max": _bound(exercise["reps"]["max"], params)},
                    "instructions": render(exercise["instructions"], params),
                })
            note = rule.then.get("plan", {}).get("note")
            if note:
                plan["notes"].append(render(note, params))
    else:
        plan["notes"].append(PLAN_NOTE[screening])

    patient_key = canonical(patient)
    cards = []
    for rule in shown:
        card_spec = rule.then.get("card")
        if not card_spec:
            continue
        card: dict[str, Any] = {
            "uuid": str(uuid.uuid5(CARD_NAMESPACE, f"{info.digest}|{params_key}|{rule.id}|{patient_key}")),
            "rule": rule.id,
            "indicator": rule.indicator,
            "summary": render(card_spec["summary"], params),
            "detail": render(card_spec["detail"], params),
            "source": {"label": info.source_title, "section": rule.section, "quote": rule.quote},
        }
        referral = rule.then.get("referral")
        if referral:
            card["referral"] = {"to": list(referral["to"]), "timeframe": referral.get("timeframe", "routine"),
                                "reason": render(referral["reason"], params)}
        cards.append(card)

    result: dict[str, Any] = {
        "cdss_version": version,
        "rule_set": {"id": info.id, "version": info.version, "digest": info.digest},
    }
    if "patient_id" in patient:
        result["patient_id"] = patient["patient_id"]
    result.update({
        "urgency": URGENCY_ORDER[urgency],
        "red_flag_screening": screening,
        "findings": findings,
        "plan": plan,
        "cards": cards,
        "missing": [path for path in unknown if path in needed],
        "parameters": {name: params[name] for name in sorted(params)},
    })
    if trace is not None:
        result["trace"] = trace
    return result


class Assessment:
    """The outcome of evaluating one patient; immutable, with JSON and CDS Hooks renderings."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    @property
    def urgency(self) -> str:
        return str(self._data["urgency"])

    @property
    def red_flag_screening(self) -> str:
        return str(self._data["red_flag_screening"])

    @property
    def findings(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._data["findings"])

    @property
    def plan(self) -> dict[str, Any]:
        return copy.deepcopy(self._data["plan"])

    @property
    def cards(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._data["cards"])

    @property
    def missing(self) -> list[str]:
        return list(self._data["missing"])

    @property
    def fired(self) -> list[str]:
        """Ids of the rules that fired, as recorded in the trace or the cards and findings."""
        if "trace" in self._data:
            return [t["rule"] for t in self._data["trace"] if t["fired"]]
        raise AttributeError("fired rules are known only when evaluated with trace=True")

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the result document."""
        return copy.deepcopy(self._data)

    def to_json(self, indent: int | None = None) -> str:
        """The result as JSON; byte-identical for identical rules, parameters and patient."""
        if indent is None:
            return json.dumps(self._data, ensure_ascii=False, separators=(",", ":"))
        return json.dumps(self._data, ensure_ascii=False, indent=indent)

    def to_cds_hooks(self) -> dict[str, Any]:
        """A strict CDS Hooks response: `{"cards": [...]}`; cdss data under a reverse-domain extension."""
        cards = []
        for card in self._data["cards"]:
            source = {"label": card["source"]["label"], "topic": {"code": card["rule"], "display": card["source"]["section"]}}
            extension: dict[str, Any] = {"rule": card["rule"], "quote": card["source"]["quote"],
                                         "rule_set": self._data["rule_set"], "urgency": self._data["urgency"],
                                         "red_flag_screening": self._data["red_flag_screening"]}
            if "referral" in card:
                extension["referral"] = card["referral"]
            cards.append({"uuid": card["uuid"], "summary": card["summary"], "detail": card["detail"],
                          "indicator": card["indicator"], "source": source,
                          "extension": {EXTENSION_KEY: extension}})
        return {"cards": cards}

    def __repr__(self) -> str:
        return f"<Assessment urgency={self.urgency} screening={self.red_flag_screening} cards={len(self._data['cards'])}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Assessment) and self._data == other._data

    __hash__ = None  # type: ignore[assignment]
