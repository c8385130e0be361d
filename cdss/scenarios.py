"""Scenario files: patient documents with the result a rule set must produce (tests as data).

Used by the test suite (every scenario must pass) and by `cdss audit` (which scenarios
exercise which rule). Format: schemas/scenario.schema.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import Problem, RuleFileError
from .yaml_source import YamlProblem, load_yaml

if TYPE_CHECKING:
    from .ruleset import RuleSet


@dataclass(frozen=True)
class Scenario:
    """One named expectation about one patient."""

    name: str
    file: str
    line: int | None
    patient: dict[str, Any]
    parameters: dict[str, Any]
    expect: dict[str, Any]

    @property
    def label(self) -> str:
        return f"{Path(self.file).name}:{self.line}: {self.name}"

    @property
    def fired(self) -> tuple[str, ...]:
        return tuple(self.expect.get("fired", ()))

    @property
    def not_fired(self) -> tuple[str, ...]:
        return tuple(self.expect.get("not_fired", ()))


def load_scenarios(directory: Path) -> list[Scenario]:
    """Every scenario in every *.yaml file of a directory, in file and list order."""
    import jsonschema

    from .resources import schema

    validator = jsonschema.Draft202012Validator(schema("scenario"))
    out: list[Scenario] = []
    problems: list[Problem] = []
    from .loader import yaml_files

    for path in yaml_files(directory):
        try:
            doc = load_yaml(path)
        except YamlProblem as error:
            problems.append(Problem(str(path), error.line, error.column, None, error.message))
            continue
        for error in validator.iter_errors(doc.data):
            where = doc.locate(tuple(error.absolute_path)) or (None, None)
            problems.append(Problem(str(path), where[0], where[1], None, error.message[:300]))
        if problems:
            continue
        for i, item in enumerate(doc.data["scenarios"]):
            if "patient_file" in item:
                patient_path = (path.parent / item["patient_file"]).resolve()
                try:
                    patient = json.loads(patient_path.read_text(encoding="utf-8"))
                except (OSError, ValueError) as error:
                    where = doc.locate(("scenarios", i, "patient_file")) or (None, None)
                    problems.append(Problem(str(path), where[0], where[1], None, f"cannot read patient file: {error}"))
                    continue
            else:
                patient = item["patient"]
            line = (doc.locate(("scenarios", i)) or (None, None))[0]
            out.append(Scenario(item["name"], str(path), line, patient, item.get("parameters", {}), item["expect"]))
    if problems:
        raise RuleFileError(problems)
    return out


def check(scenario: Scenario, rules: RuleSet) -> list[str]:
    """Every way the rule set's result differs from the scenario's expectation (empty: it passes)."""
    if scenario.parameters:
        rules = rules.with_parameters(scenario.parameters)
    result = rules.evaluate(scenario.patient, trace=True).to_dict()
    fired = {step["rule"] for step in result["trace"] if step["fired"]}
    expect = scenario.expect
    failures: list[str] = []

    def differ(what: str, wanted: Any, got: Any) -> None:
        if wanted != got:
            failures.append(f"{what}: expected {wanted!r}, got {got!r}")

    known = {r.id for r in rules.rules}
    for rule_id in (*scenario.fired, *scenario.not_fired):
        if rule_id not in known:
            failures.append(f"scenario names rule '{rule_id}', which is not in the rule set")
    if "urgency" in expect:
        differ("urgency", expect["urgency"], result["urgency"])
    if "red_flag_screening" in expect:
        differ("red_flag_screening", expect["red_flag_screening"], result["red_flag_screening"])
    if "plan_status" in expect:
        differ("plan.status", expect["plan_status"], result["plan"]["status"])
    if "plan_phase" in expect:
        differ("plan.phase", expect["plan_phase"], result["plan"]["phase"])
    if "exercises" in expect:
        differ("plan.exercises", expect["exercises"], [e["id"] for e in result["plan"]["exercises"]])
    if "findings" in expect:
        def key(f: dict[str, Any]) -> tuple[str, str]:
            return f["code"], f.get("side") or ""
        differ("findings", sorted(map(key, expect["findings"])), sorted(map(key, result["findings"])))
    if "first_card_indicator" in expect:
        first = result["cards"][0]["indicator"] if result["cards"] else None
        differ("first card indicator", expect["first_card_indicator"], first)
    for rule_id in scenario.fired:
        if rule_id not in fired:
            failures.append(f"rule '{rule_id}' should fire but did not")
    for rule_id in scenario.not_fired:
        if rule_id in fired:
            failures.append(f"rule '{rule_id}' should not fire but did")
    for path in expect.get("missing_includes", ()):
        if path not in result["missing"]:
            failures.append(f"missing should list '{path}'")
    # clinical coherence (issue 17)
    if "questions" in expect:
        differ("questions", expect["questions"], [q["field"] for q in result.get("questions", [])])
    if "urgency_questions" in expect:
        differ("questions that could raise urgency", sorted(expect["urgency_questions"]),
               sorted(q["field"] for q in result.get("questions", []) if q["could_change"] == "urgency"))
    if "conflicts" in expect:
        differ("conflicts", expect["conflicts"], [c["fields"] for c in result.get("conflicts", [])])
    if "cards" in expect:
        differ("cards", expect["cards"], [c["rule"] for c in result["cards"]])
    if "referrals" in expect:
        differ("referrals", expect["referrals"], [c["rule"] for c in result["cards"] if "referral" in c])
    return failures
