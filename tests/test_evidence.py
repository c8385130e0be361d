"""The rule set carries its evidence: quotes are verified on every load, against the sources it ships."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import cdss
from cdss.cli.commands import cli
from tests.conftest import FIXTURES, ROOT, source_path

BUNDLED = ROOT / "rules"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), prog_name="cdss")


@pytest.fixture()
def copy(tmp_path: Path) -> Path:
    target = tmp_path / "rules"
    shutil.copytree(BUNDLED, target)
    return target


def test_the_shipped_source_is_the_declared_one_byte_for_byte() -> None:
    loaded = cdss.load_rules().loaded
    assert [s.path.resolve() for s in loaded.sources] == [source_path().resolve()]
    assert loaded.sources[0].text.encode("utf-8") == source_path().read_bytes()
    assert "’" in loaded.sources[0].text  # curly quotes kept: the quotes in the rules depend on them
    assert loaded.inventory is not None and loaded.inventory.is_file()


def test_an_invented_quote_fails_validate_with_the_line_of_the_quote(copy: Path) -> None:
    pack = copy / "escalation.yaml"
    lines = pack.read_text(encoding="utf-8").splitlines(keepends=True)
    line_no = next(i for i, line in enumerate(lines, 1) if "quote:" in line)
    original = lines[line_no - 1]
    assert "quote:" in original
    lines[line_no - 1] = original.split("quote:")[0] + 'quote: "Glute bridges cure all back pain in a week."\n'
    pack.write_text("".join(lines), encoding="utf-8")
    result = invoke("validate", str(copy))
    assert result.exit_code == 3, result.output
    assert f"escalation.yaml:{line_no}:" in result.stdout
    assert "the quote is not found verbatim in" in result.stdout
    with pytest.raises(cdss.RuleFileError):
        cdss.load_rules(copy)


def test_straight_quotes_for_curly_ones_get_a_hint(copy: Path) -> None:
    curly = "The body compensates by recruiting other muscles to perform the glutes’ job"
    assert curly in source_path().read_text(encoding="utf-8")
    pack = copy / "escalation.yaml"
    lines = pack.read_text(encoding="utf-8").splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if "quote:" in line)
    lines[at] = lines[at].split("quote:")[0] + 'quote: "' + curly.replace("’", "'") + '"\n'
    pack.write_text("".join(lines), encoding="utf-8")
    result = invoke("validate", str(copy))
    assert result.exit_code == 3, result.output
    assert "(the source writes ’ where the quote has ')" in result.stdout


def test_a_wrong_section_fails_with_the_nearest_heading(copy: Path) -> None:
    pack = copy / "escalation.yaml"
    text = pack.read_text(encoding="utf-8")
    loaded = cdss.load_rules(copy).loaded
    section = next(r.section for r in loaded.rules if r.pack == "escalation")
    assert section in text
    pack.write_text(text.replace(f"section: {section}", f"section: {section}s", 1), encoding="utf-8")
    result = invoke("validate", str(copy))
    assert result.exit_code == 3, result.output
    assert f"did you mean '{section}'?" in result.stdout


def test_a_missing_source_file_is_an_error_at_its_declaration(copy: Path) -> None:
    (copy / "sources" / "weak-glutes-back-pain.txt").unlink()
    result = invoke("validate", str(copy))
    assert result.exit_code == 3
    assert "ruleset.yaml:" in result.stdout and "source file 'sources/weak-glutes-back-pain.txt' does not exist" in result.stdout


def test_a_rule_set_without_sources_says_its_quotes_are_not_verified() -> None:
    result = invoke("validate", str(FIXTURES / "basic"))
    assert result.exit_code == 0
    assert "quotes not verified: no source declared" in result.stderr
    strict = invoke("validate", "--strict", str(FIXTURES / "basic"))
    assert strict.exit_code == 1


def test_the_bundled_rules_pass_strict_validation() -> None:
    result = invoke("validate", "--strict")
    assert result.exit_code == 0, result.output
    assert "24 quotes verified against" in result.stderr or "quotes verified against rules/sources/" in result.stderr


def test_a_yaml_file_not_listed_in_packs_is_a_warning_and_fails_strict(copy: Path) -> None:
    shutil.copy(copy / "escalation.yaml", copy / "new-pack.yaml")
    result = invoke("validate", str(copy))
    assert result.exit_code == 0, result.output
    assert "new-pack.yaml:1:1: -: warning: 'new-pack.yaml' is in the rule-set directory but not listed in ruleset.yaml packs" in result.stdout
    assert invoke("validate", "--strict", str(copy)).exit_code == 1


def test_audit_checks_quotes_by_default_and_source_still_overrides(copy: Path, tmp_path: Path) -> None:
    from cdss.audit import rulebook

    rules = cdss.load_rules(copy)
    n = len(rules.rules)
    assert f"{n} of {n} found verbatim" in rulebook(rules, source=None)
    other = tmp_path / "other.txt"
    other.write_text("Nothing quoted here.\n", encoding="utf-8")
    assert f"0 of {n} found verbatim" in rulebook(rules, source=other)
    bare = rulebook(cdss.load_rules(FIXTURES / "basic"), source=None)
    assert "not checked" in bare
