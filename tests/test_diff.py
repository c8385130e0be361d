"""`cdss diff OLD NEW`: changes in meaning between two rule sets, and whether the version moved as semver says."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import cdss
from cdss.audit.diff import diff, next_version, render_diff, version_bump
from cdss.cli.commands import cli
from tests.conftest import ROOT

# The commit that made persisting pain refer whatever its trend changed three conditions and
# kept version 1.0.0: exactly the mistake `cdss diff` exists to catch.
CHANGED_WITHOUT_BUMP = "6b5cf8d"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="cdss")


def _has_revision(revision: str) -> bool:
    if shutil.which("git") is None:
        return False
    found = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{revision}~1^{{commit}}"],
                           capture_output=True, check=False)
    return found.returncode == 0


def _set(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "new" / "rules"
    shutil.copytree(ROOT / "rules", target)
    return target


def test_against_a_previous_git_revision_of_this_repository(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                            copy: Path) -> None:
    """Real history when the suite runs from a git clone; otherwise the same change made by hand to a copy."""
    monkeypatch.chdir(ROOT)
    if _has_revision(CHANGED_WITHOUT_BUMP):
        old, new = f"{CHANGED_WITHOUT_BUMP}~1", f"{CHANGED_WITHOUT_BUMP}:rules"
    else:  # an exported tree without .git: build the "old" rule set by editing a copy
        _set(copy / "escalation.yaml", "gte: {param: escalation_review_weeks}", "gt: {param: escalation_review_weeks}")
        old, new = str(copy), str(ROOT / "rules")
    result = invoke("diff", old, new)
    assert result.exit_code == 1, result.output
    assert "the condition changed (who it fires for)" in result.stdout
    assert "escalation-persisting-pain-review" in result.stdout
    assert "needs a **major** bump" in result.stdout
    assert re.search(r"ERROR: version (\S+) → \1 is not bumped, but the changes need a major bump: set version: "
                     r"\d+\.0\.0 in ruleset.yaml", result.stderr), result.stderr
    assert "Before:" in result.stdout and "After:" in result.stdout
    assert "cdss-diff-" not in result.stdout  # no temporary export paths
    html = invoke("diff", "--format", "html", old, new)
    assert html.exit_code == 1 and html.stdout.startswith("<!DOCTYPE html>")


def test_against_the_working_tree_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    if not _has_revision("HEAD"):
        pytest.skip("not a git clone with history: the revision form is covered with copies above")
    monkeypatch.chdir(ROOT)
    result = invoke("diff", "HEAD~1")
    assert result.exit_code in (0, 1), result.output
    assert ("ERROR" in result.stderr) == (result.exit_code == 1)


def test_a_changed_condition_without_a_bump_is_an_error_and_a_major_bump_fixes_it(copy: Path) -> None:
    _set(copy / "escalation.yaml", "gte: {param: escalation_review_weeks}", "gt: {param: escalation_review_weeks}")
    result = invoke("diff", str(ROOT / "rules"), str(copy))
    assert result.exit_code == 1
    assert "set version: 4.0.0 in ruleset.yaml" in result.stderr
    assert "at least 4 weeks" in result.stdout and "more than 4 weeks" in result.stdout  # plain English both sides
    _set(copy / "ruleset.yaml", "version: 3.0.0", "version: 4.0.0")
    fixed = invoke("diff", str(ROOT / "rules"), str(copy))
    assert fixed.exit_code == 0, fixed.output
    assert "is a major bump; the changes need at least major: ok" in fixed.stderr


def test_urgency_parameters_added_rules_and_retirement(copy: Path) -> None:
    old = cdss.load_rules(ROOT / "rules").loaded
    escalation = copy / "escalation.yaml"
    text = escalation.read_text(encoding="utf-8")
    _set(escalation, "urgency: see-professional", "urgency: emergency")
    _set(escalation, "default: 4", "default: 5")
    new = cdss.load_rules(copy).loaded
    report = diff(old, new)
    kinds = {(c.kind, c.subject) for c in report.changes}
    assert ("parameter-default", "escalation_review_weeks") in kinds
    assert any(k == "urgency" for k, _ in kinds)
    assert report.required == "major" and not report.ok
    assert text  # the copy was read before editing
    # retire a rule: major, named as retired
    escalation.write_text(text, encoding="utf-8")
    rid = next(r.id for r in new.rules if r.pack == "escalation")
    lines = escalation.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip() == f"- id: {rid}")
    lines.insert(at + 1, "    status: retired\n")
    escalation.write_text("".join(lines), encoding="utf-8")
    retired = diff(old, cdss.load_rules(copy).loaded)
    assert [c.kind for c in retired.changes if c.subject == rid] == ["rule-retired"]


def test_wording_only_needs_a_patch_and_everything_is_escaped(copy: Path) -> None:
    loaded = cdss.load_rules(copy).loaded
    rule = loaded.rules[0]
    pack = next(p for p in (copy).glob("*.yaml") if f"- id: {rule.id}\n" in p.read_text(encoding="utf-8"))
    _set(pack, f"title: {rule.title}\n", "title: 'Numbness <script>alert(1)</script> & tingling'\n")
    report = diff(cdss.load_rules(ROOT / "rules").loaded, cdss.load_rules(copy).loaded)
    assert [(c.kind, c.bump) for c in report.changes] == [("wording", "patch")]
    assert report.verdict.endswith("set version: 3.0.1 in ruleset.yaml")
    html = render_diff(report, "html")
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; tingling" in html


def test_pack_metadata_is_a_patch_and_a_minor_bump_covers_it(copy: Path) -> None:
    _set(copy / "escalation.yaml", "    name: Pending clinical sign-off", "    name: Dr A. Reviewer")
    _set(copy / "ruleset.yaml", "version: 3.0.0", "version: 3.1.0")
    report = diff(cdss.load_rules(ROOT / "rules").loaded, cdss.load_rules(copy).loaded)
    assert [(c.kind, c.subject, c.bump) for c in report.changes] == [("pack-metadata", "escalation", "patch")]
    assert report.ok and report.actual == "minor"


def test_rule_set_data_beside_rule_set_is_compared(copy: Path) -> None:
    """`stands_alone` (and scope, conflicts) sit beside `rule_set:` in ruleset.yaml; a change there is a change."""
    _set(copy / "ruleset.yaml", "stands_alone: [emergency]", "stands_alone: []")
    report = diff(cdss.load_rules(ROOT / "rules").loaded, cdss.load_rules(copy).loaded)
    assert [(c.kind, c.bump) for c in report.changes] == [("rule-set-stands_alone", "minor")]
    assert not report.ok


def test_no_change_is_no_change(monkeypatch: pytest.MonkeyPatch) -> None:
    result = invoke("diff", str(ROOT / "rules"), str(ROOT / "rules"))
    assert result.exit_code == 0
    assert "No change in meaning" in result.stdout
    assert "no change in meaning; version" in result.stderr


def test_neither_a_directory_nor_a_revision_is_a_usage_error() -> None:
    result = invoke("diff", "no-such-thing-anywhere", str(ROOT / "rules"))
    assert result.exit_code == 2
    assert "neither a directory nor a git revision" in result.stderr or "not inside a git repository" in result.stderr


@pytest.mark.parametrize(("old", "new", "bump"), [
    ("1.0.0", "1.0.0", "none"), ("1.0.0", "1.0.1", "patch"), ("1.0.9", "1.1.0", "minor"), ("1.2.3", "2.0.0", "major"),
    ("2.0.0", "1.9.9", "backwards"), ("1.0", "1.0.1", "invalid"), ("1.0.0-rc.1", "1.0.0-rc.2", "patch"),
])
def test_version_bumps(old: str, new: str, bump: str) -> None:
    assert version_bump(old, new) == bump


def test_next_version() -> None:
    assert [next_version("1.4.2", b) for b in ("patch", "minor", "major")] == ["1.4.3", "1.5.0", "2.0.0"]
