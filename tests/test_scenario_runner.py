"""`cdss test` runs scenario files; `cdss audit` reports a scenario the rules do not meet as a problem."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from cdss.cli.commands import cli
from tests.conftest import FIXTURES, ROOT

SCENARIOS = ROOT / "examples" / "scenarios"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="cdss")


@pytest.fixture()
def wrong(tmp_path: Path) -> tuple[Path, int, int]:
    """A copy of the bundled scenarios with one urgency and one fired rule deliberately wrong: (dir, lines)."""
    target = tmp_path / "scenarios"
    shutil.copytree(SCENARIOS, target)
    shutil.copytree(ROOT / "examples" / "patients", tmp_path / "patients")
    path = target / "escalation.yaml"
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    urgency = next(i for i, line in enumerate(lines) if line.strip() == "urgency: self-care")
    lines[urgency] = lines[urgency].replace("self-care", "emergency")
    fired = next(i for i, line in enumerate(lines) if line.strip() == "fired: [escalation-persisting-pain-review]")
    lines[fired] = lines[fired].replace("escalation-persisting-pain-review", "escalation-persisting-pain-refer")
    path.write_text("".join(lines), encoding="utf-8")
    return target, urgency + 1, fired + 1


def test_the_bundled_scenarios_pass_through_cdss_test() -> None:
    result = invoke("test")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert "scenarios in 5 files against weak-glutes-low-back-pain" in result.stderr  # 5th: coherence.yaml (issue 17)
    assert "FAILED" not in result.stderr
    explicit = invoke("test", str(SCENARIOS / "escalation.yaml"), "--rules", str(ROOT / "rules"))
    assert explicit.exit_code == 0, explicit.output and "in 1 file against" in explicit.stderr


def test_each_failing_expectation_is_one_line_with_file_and_line(wrong: tuple[Path, int, int]) -> None:
    directory, urgency_line, fired_line = wrong
    result = invoke("test", str(directory))
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    file = directory / "escalation.yaml"
    assert f"{file}:{urgency_line}: week 3, pain unchanged - too early to escalate: urgency: " \
           "expected 'emergency', found 'self-care'" in lines
    assert any(line.startswith(f"{file}:{fired_line}: ") and "rule 'escalation-persisting-pain-refer': "
               "expected fired, found not fired" in line for line in lines), lines
    assert "2 FAILED (2 failing expectations)" in result.stderr


def test_json_format_lists_every_failure(wrong: tuple[Path, int, int]) -> None:
    directory, urgency_line, _ = wrong
    result = invoke("test", "--format", "json", str(directory))
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["failed"] == 2 and doc["passed"] == doc["scenarios"] - 2 and doc["scenarios"] >= 45
    first = doc["failures"][0]
    assert first["line"] == urgency_line and first["what"] == "urgency"
    assert (first["expected"], first["found"]) == ("'emergency'", "'self-care'")
    assert doc["rule_set"]["id"] == "weak-glutes-low-back-pain"


def test_an_unknown_rule_gets_the_nearest_name(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("scenarios:\n  - name: typo\n    patient: {}\n    expect:\n      not_fired: [red-flag-bladder-bowl]\n",
                    encoding="utf-8")
    result = invoke("test", str(path))
    assert result.exit_code == 1
    assert f"{path}:5: typo: rule 'red-flag-bladder-bowl': expected a rule of the rule set, found no such rule" in result.stdout


def test_an_invalid_scenario_file_is_exit_3_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("scenarios:\n  - name: no expectation\n    patient: {}\n  - name: bad\n    patient: {}\n"
                    "    expect: {urgency: soon}\n", encoding="utf-8")
    result = invoke("test", str(path))
    assert result.exit_code == 3
    assert f"{path}:2:" in result.stderr and f"{path}:6:" in result.stderr  # every problem, each at its line
    assert "2 problems in the scenario files" in result.stderr and "cdss validate" not in result.stderr


def test_no_scenarios_beside_a_rule_set_is_a_usage_error() -> None:
    result = invoke("test", "--rules", str(FIXTURES / "basic"))
    assert result.exit_code == 2 and "no examples/scenarios directory" in result.stderr


def test_audit_reports_a_wrong_scenario_as_a_problem(wrong: tuple[Path, int, int]) -> None:
    directory, urgency_line, _ = wrong
    result = invoke("audit", "--scenarios", str(directory))
    assert result.exit_code == 0  # the rulebook is still written; the count says what is wrong
    assert "cdss: audit: 2 problems" in result.stderr
    assert "scenario-fails" in result.stdout and f"escalation.yaml:{urgency_line}" in result.stdout
    strict = invoke("audit", "--strict", "--scenarios", str(directory))
    assert strict.exit_code == 1
    assert invoke("audit", "--strict").exit_code == 0


def test_pre_commit_hooks_run_strict_validation_and_the_scenarios() -> None:
    import shlex

    import yaml

    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))}
    assert set(hooks) == {"cdss-validate", "cdss-test"}
    for hook in hooks.values():
        assert hook["language"] == "python" and hook["pass_filenames"] is False
        program, *args = shlex.split(hook["entry"])
        assert program == "cdss"
        result = invoke(*args, *(["--rules", str(ROOT / "rules")] if args[0] == "test" else [str(ROOT / "rules")]))
        assert result.exit_code == 0, (hook["id"], result.output)
    assert "--strict" in hooks["cdss-validate"]["entry"]
