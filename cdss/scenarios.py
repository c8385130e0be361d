"""Scenario files: patient documents with the result a rule set must produce (tests as data).

Used by the test suite (every scenario must pass) and by `cdss audit` (which scenarios
exercise which rule). Format: schemas/scenario.schema.json.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
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
    lines: tuple[tuple[str, int], ...] = ()  # expectation key (`urgency`, `fired:RULE`...) -> line

    def line_of(self, key: str) -> int | None:
        """The line of one expectation (`urgency`, `fired:RULE`...), else the scenario's own line."""
        for name, line in self.lines:
            if name == key:
                return line
        base = key.split(":", 1)[0]
        for name, line in self.lines:
            if name == base:
                return line
        return self.line

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
    from .loader import yaml_files

    return load_scenario_files(yaml_files(directory))


def scenario_files(paths: Iterable[Path]) -> list[Path]:
    """The scenario files named: a file as is, a directory as its *.yaml / *.yml files (sorted)."""
    from .loader import yaml_files

    out: list[Path] = []
    for path in paths:
        out += yaml_files(path) if path.is_dir() else [path]
    return out


def _expectation_lines(doc: Any, i: int, expect: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    lines: list[tuple[str, int]] = []
    for key, value in expect.items():
        where = doc.locate(("scenarios", i, "expect", key))
        if where:
            lines.append((key, where[0]))
        if isinstance(value, list):
            for j, item in enumerate(value):
                at = doc.locate(("scenarios", i, "expect", key, j))
                if at and isinstance(item, str):
                    lines.append((f"{key}:{item}", at[0]))
    return tuple(lines)


def load_scenario_files(files: Iterable[Path]) -> list[Scenario]:
    """Every scenario of the given files, in order; RuleFileError listing every problem."""
    import jsonschema

    from .resources import schema

    validator = jsonschema.Draft202012Validator(schema("scenario"))
    out: list[Scenario] = []
    problems: list[Problem] = []
    for path in files:
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
            out.append(Scenario(item["name"], str(path), line, patient, item.get("parameters", {}), item["expect"],
                                _expectation_lines(doc, i, item["expect"])))
    if problems:
        raise RuleFileError(problems)
    return out


@dataclass(frozen=True)
class Mismatch:
    """One expectation of a scenario that the rule set's result does not meet."""

    key: str  # the expectation: `urgency`, `fired:RULE`... (Scenario.line_of finds its line)
    what: str  # what is compared, for a human: `urgency`, `rule 'x'`, `plan.exercises`
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.what}: expected {self.expected}, found {self.found}"


def check(scenario: Scenario, rules: RuleSet) -> list[str]:
    """Every way the rule set's result differs from the scenario's expectation (empty: it passes)."""
    return [str(m) for m in mismatches(scenario, rules)]


def mismatches(scenario: Scenario, rules: RuleSet) -> list[Mismatch]:
    """Every expectation the rule set's result does not meet, in the order the format lists them.

    A scenario whose parameters or patient the rule set refuses is one mismatch, not an exception:
    a scenario runner reports it beside the others."""
    from .errors import ParameterError, PatientDataError

    try:
        if scenario.parameters:
            rules = rules.with_parameters(scenario.parameters)
        result = rules.evaluate(scenario.patient, trace=True).to_dict()
    except ParameterError as error:
        return [Mismatch("parameters", "parameters", "values the rule set accepts", f"refused ({error})")]
    except PatientDataError as error:
        return [Mismatch("patient", "patient", "a valid patient document", f"invalid ({error})")]
    fired = {step["rule"] for step in result["trace"] if step["fired"]}
    expect = scenario.expect
    out: list[Mismatch] = []

    def differ(key: str, what: str, wanted: Any, got: Any) -> None:
        if wanted != got:
            out.append(Mismatch(key, what, repr(wanted), repr(got)))

    known = {r.id for r in rules.rules}
    for kind in ("fired", "not_fired"):
        for rule_id in expect.get(kind, ()):
            if rule_id not in known:
                from .loader import nearest

                out.append(Mismatch(f"{kind}:{rule_id}", f"rule '{rule_id}'", "a rule of the rule set",
                                    f"no such rule{nearest(rule_id, known)}"))
    if "urgency" in expect:
        differ("urgency", "urgency", expect["urgency"], result["urgency"])
    if "red_flag_screening" in expect:
        differ("red_flag_screening", "red_flag_screening", expect["red_flag_screening"], result["red_flag_screening"])
    if "plan_status" in expect:
        differ("plan_status", "plan.status", expect["plan_status"], result["plan"]["status"])
    if "plan_phase" in expect:
        differ("plan_phase", "plan.phase", expect["plan_phase"], result["plan"]["phase"])
    if "exercises" in expect:
        differ("exercises", "plan.exercises", expect["exercises"], [e["id"] for e in result["plan"]["exercises"]])
    if "findings" in expect:
        def key(f: dict[str, Any]) -> tuple[str, str]:
            return f["code"], f.get("side") or ""
        differ("findings", "findings", sorted(map(key, expect["findings"])), sorted(map(key, result["findings"])))
    if "first_card_indicator" in expect:
        first = result["cards"][0]["indicator"] if result["cards"] else None
        differ("first_card_indicator", "first card indicator", expect["first_card_indicator"], first)
    for rule_id in scenario.fired:
        if rule_id in known and rule_id not in fired:
            out.append(Mismatch(f"fired:{rule_id}", f"rule '{rule_id}'", "fired", "not fired"))
    for rule_id in scenario.not_fired:
        if rule_id in fired:
            out.append(Mismatch(f"not_fired:{rule_id}", f"rule '{rule_id}'", "not fired", "fired"))
    for path in expect.get("missing_includes", ()):
        if path not in result["missing"]:
            out.append(Mismatch(f"missing_includes:{path}", "missing", f"to include '{path}'", repr(result["missing"])))
    # clinical coherence (issue 17)
    if "questions" in expect:
        differ("questions", "questions", expect["questions"], [q["field"] for q in result.get("questions", [])])
    if "urgency_questions" in expect:
        differ("urgency_questions", "questions that could raise urgency", sorted(expect["urgency_questions"]),
               sorted(q["field"] for q in result.get("questions", []) if q["could_change"] == "urgency"))
    if "conflicts" in expect:
        differ("conflicts", "conflicts", expect["conflicts"], [c["fields"] for c in result.get("conflicts", [])])
    if "cards" in expect:
        differ("cards", "cards", expect["cards"], [c["rule"] for c in result["cards"]])
    if "referrals" in expect:
        differ("referrals", "referrals", expect["referrals"], [c["rule"] for c in result["cards"] if "referral" in c])
    return out
