"""The audit rulebook: data (build_audit), static findings with file:line, plain-English conditions,
and the Markdown / HTML renderings a clinician reviews and signs off."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import cdss
from cdss.audit import (Audit, Clause, Finding, audit_findings, build_audit, describe_condition, headings, rulebook)
from cdss.conditions import All, AnyOf, Leaf, Not, ParamRef
from cdss.fields import patient_fields
from cdss.scenarios import Scenario, load_scenarios
from tests.conftest import ROOT, inventory_path, source_path
from tests.helpers import rules_body, write_rule_set

SCENARIO_DIR = ROOT / "examples" / "scenarios"
PATIENTS = ROOT / "examples" / "patients"


@pytest.fixture(scope="module")
def scenarios() -> list[Scenario]:
    return load_scenarios(SCENARIO_DIR)


@pytest.fixture(scope="module")
def source(source_text: str) -> Path:
    """The source document's path (the `source_text` fixture fails clearly when it is missing)."""
    return source_path()


@pytest.fixture(scope="module")
def audit(bundled: cdss.RuleSet, source_text: str, scenarios: list[Scenario]) -> Audit:
    return build_audit(bundled, source_text, scenarios, source_name=str(source_path()), scenarios_dir=SCENARIO_DIR)


def _line_of(text: str, needle: str, start: int = 0) -> int:
    """1-based line of the first occurrence of `needle` at or after `start`."""
    at = text.index(needle, start)
    return text.count("\n", 0, at) + 1


# ------------------------------------------------------------------ the bundled rules against the real source


def test_bundled_rules_every_quote_found_and_section_a_heading(audit: Audit) -> None:
    assert audit.source_given
    assert [e.id for e in audit.rules if e.quote_status != "found"] == []
    assert audit.counts["quotes_found"] == audit.counts["rules"] == len(audit.rules) > 0
    assert all(s.in_source for s in audit.sections)
    assert {e.quote_section for e in audit.rules} <= set(audit.source_headings)
    assert [e.id for e in audit.rules if e.quote_section != e.rule.section] == []


def test_bundled_rules_cover_every_inventory_rule_row(audit: Audit) -> None:
    path = inventory_path()
    if not path.is_file():
        pytest.fail(f"guidance inventory not found at {path}: the rule set ships it in rules/sources/")
    rows = dict(re.findall(r"^\| (G-[A-Z]+-\d+) \| (rule|context)\b", path.read_text(encoding="utf-8"), re.M))
    assert len(rows) >= 20
    by_id = {row.item.id: row for row in audit.guidance}
    assert set(by_id) == set(rows)
    uncovered = sorted(gid for gid, kind in rows.items() if kind == "rule" and not by_id[gid].encoded_by)
    assert uncovered == []
    assert all(row.covered for row in audit.guidance)
    rule_rows = sum(kind == "rule" for kind in rows.values())
    assert audit.counts["guidance_rule_rows_covered"] == audit.counts["guidance_rule_rows"] == rule_rows


def test_bundled_rules_have_no_problems_and_scenarios_for_every_rule(audit: Audit) -> None:
    problems = [f"{f.where}: {f.message}" for f in audit.findings if f.severity == "problem"]
    assert problems == []
    assert audit.scenario_gaps == ()
    for entry in audit.rules:
        assert entry.positive and entry.negative, entry.id
        assert all(re.fullmatch(r"examples/scenarios/[\w.-]+\.yaml:\d+", ref.where) for ref in entry.positive + entry.negative)


def test_headings_of_the_source(source_text: str) -> None:
    heads = headings(source_text)
    assert heads[0] == "Do Weak Glutes Cause Back Pain?"
    assert "When Glute Strengthening Isn’t Enough" in heads
    assert len(heads) == 6


def test_exclusive_pairs_are_reported_as_notes(audit: Audit) -> None:
    pairs = {f.rules for f in audit.findings if f.kind == "exclusive-pair"}
    assert ("escalation-persisting-pain-review", "escalation-persisting-pain-refer") in pairs
    assert ("red-flag-significant-leg-weakness", "screening-significant-leg-weakness-unanswered") in pairs
    # rules that can fire together are never reported as exclusive
    assert not any({"exercise-clamshell", "exercise-glute-bridge"} <= set(p) for p in pairs)
    assert not any({"sign-hip-drop-standing-left", "sign-hip-drop-standing-right"} <= set(p) for p in pairs)
    assert all(f.severity == "note" for f in audit.findings if f.kind == "exclusive-pair")


def test_rule_entries_carry_what_a_reviewer_needs(audit: Audit, bundled: cdss.RuleSet) -> None:
    entry = audit.rule("escalation-persisting-pain-refer")
    assert entry.where == f"rules/escalation.yaml:{bundled.rule(entry.id).where.line}"
    assert re.fullmatch(r"rules/escalation\.yaml:\d+", entry.quote_where)
    assert {p.name: (p.value, p.unit, p.origin) for p in entry.parameters} == {"escalation_refer_weeks": (6, "weeks", "policy"),
                                                                                  "professional_evaluation_within_weeks": (2, "weeks", "policy")}
    assert [g.id for g in entry.guidance] == ["G-ESC-1"]
    kinds = [o.kind for o in entry.outputs]
    assert kinds == ["card", "referral", "relations", "questions"]  # relations and questions: issue 17
    referral = dict(entry.outputs[1].items)
    assert "6 or more weeks" in referral["reason"]  # placeholders filled with the value in force
    assert "escalation_refer_weeks (currently 6 weeks)" in "\n".join(entry.condition.lines())
    clamshell = audit.rule("exercise-clamshell")
    exercise = dict(next(o for o in clamshell.outputs if o.kind == "exercise").items)
    assert exercise["sets"] == "2 to 3 sets (sets_min, sets_max)"
    assert {p.name for p in clamshell.parameters} == {"sets_min", "sets_max", "reps_min", "reps_max",
                                                      "progression_min_weeks_activation"}  # its condition reads the gate
    hip = dict(next(o for o in audit.rule("sign-hip-drop-standing-left").outputs if o.kind == "finding").items)
    assert hip["side"] == "left"
    # every pack's metadata is there, in file order, with its rules in file order
    assert [p.pack.id for p in audit.packs] == [p.id for p in bundled.loaded.packs]
    assert [e.id for e in audit.rules] == [r.id for r in bundled.rules]


def test_parameter_table(audit: Audit) -> None:
    rows = {row.parameter.name: row for row in audit.parameters}
    assert rows["sets_min"].parameter.origin == "source"
    assert rows["escalation_refer_weeks"].parameter.origin == "policy"
    assert set(rows["escalation_review_weeks"].used_by) == {"escalation-persisting-pain-review",
                                                            "escalation-pain-constant-or-worsening"}
    assert all(row.used_by for row in rows.values())


# ------------------------------------------------------------------ a deliberately broken copy of the rules

DUPLICATE_RULE = """
  - id: sign-deep-buttock-ache-again
    title: Deep buttock ache, written twice
    category: sign
    indicator: info
    urgency: self-care
    priority: 290
    guidance: [G-SIGN-2]
    source:
      section: Signs That Glute Weakness Is Contributing to Pain
      quote: "A common indicator is a deep ache in the buttock area, sometimes mistaken for sciatica."
    when:
      field: symptoms.deep_buttock_ache
      is: true
    then:
      finding:
        code: deep-buttock-ache
        text: Deep ache in the buttock area, again.
"""

UNUSED_PARAMETER = """  unused_knob:
    type: integer
    default: 3
    unit: weeks
    origin: policy
    description: A parameter no rule uses.
"""


@pytest.fixture()
def broken(tmp_path: Path) -> dict:
    """A copy of the bundled rules with a wrong quote, an unused parameter, a draft rule with markup in its
    title, a draft pack, a section that is not a heading and two rules producing the same finding."""
    root = tmp_path / "rules"
    shutil.copytree(ROOT / "rules", root)
    manifest = root / "ruleset.yaml"  # undeclare the source, else the loader refuses the broken quote itself
    text = manifest.read_text(encoding="utf-8")
    manifest.write_text(re.sub(r"\n  sources:\n(?:    .*\n)+", "\n", text), encoding="utf-8")
    assert "sources:" not in manifest.read_text(encoding="utf-8")
    esc = root / "escalation.yaml"
    text = esc.read_text(encoding="utf-8")
    text = text.replace("professional evaluation is necessary.\"", "professional evaluation is required.\"", 1)
    text = text.replace("parameters:\n", "parameters:\n" + UNUSED_PARAMETER, 1)
    esc.write_text(text, encoding="utf-8")

    signs = root / "risk-and-signs.yaml"
    text = signs.read_text(encoding="utf-8")
    text = text.replace("    title: Deep ache in the buttock\n",
                        "    title: 'Deep ache <b>\"in\"</b> & the buttock'\n    status: draft\n", 1)
    at = text.index("  - id: sign-trunk-sway-side-bend")
    text = text[:at] + text[at:].replace("section: Signs That Glute Weakness Is Contributing to Pain",
                                         "section: Signs of Trunk Sway", 1)
    text = text.rstrip("\n") + "\n" + DUPLICATE_RULE
    signs.write_text(text, encoding="utf-8")

    programme = root / "exercise-programme.yaml"
    text = programme.read_text(encoding="utf-8")
    programme.write_text(text.replace("  status: active\n", "  status: draft\n", 1), encoding="utf-8")

    esc_text, signs_text, prog_text = (p.read_text(encoding="utf-8") for p in (esc, signs, programme))
    trunk = signs_text.index("  - id: sign-trunk-sway-side-bend")
    return {
        "root": root,
        "rules": cdss.load_rules(root),
        "quote": ("rules/escalation.yaml", _line_of(esc_text, "professional evaluation is required.\"")),
        "unused": ("rules/escalation.yaml", _line_of(esc_text, "  unused_knob:")),
        "draft_rule": ("rules/risk-and-signs.yaml", _line_of(signs_text, "    status: draft")),
        "draft_pack": ("rules/exercise-programme.yaml", _line_of(prog_text, "  status: draft")),
        "section": ("rules/risk-and-signs.yaml", _line_of(signs_text, "section: Signs of Trunk Sway", trunk)),
        "same_output": ("rules/risk-and-signs.yaml", _line_of(signs_text, "  - id: sign-deep-buttock-ache\n")),
    }


def _only(findings: list[Finding], kind: str) -> Finding:
    matching = [f for f in findings if f.kind == kind]
    assert len(matching) == 1, (kind, matching)
    return matching[0]


def test_broken_copy_reports_every_problem_at_its_file_and_line(broken: dict, source_text: str,
                                                                 scenarios: list[Scenario]) -> None:
    findings = audit_findings(broken["rules"], scenarios, source_text=source_text)
    quote = _only(findings, "quote-not-found")
    assert (quote.file, quote.line) == broken["quote"]
    assert quote.rules == ("escalation-persisting-pain-review",) and quote.severity == "problem"
    unused = _only(findings, "unused-parameter")
    assert (unused.file, unused.line) == broken["unused"] and "unused_knob" in unused.message
    draft = _only(findings, "draft-rule")
    assert (draft.file, draft.line) == broken["draft_rule"] and draft.rules == ("sign-deep-buttock-ache",)
    pack = _only(findings, "draft-pack")
    assert (pack.file, pack.line) == broken["draft_pack"] and "exercise-programme" in pack.message
    section = _only(findings, "section-not-in-source")
    assert (section.file, section.line) == broken["section"] and section.rules == ("sign-trunk-sway-side-bend",)
    same = _only(findings, "same-output")
    assert (same.file, same.line) == broken["same_output"]
    assert same.rules == ("sign-deep-buttock-ache", "sign-deep-buttock-ache-again") and "deep-buttock-ache" in same.message
    assert _only(findings, "no-negative-scenario").rules == ("sign-deep-buttock-ache-again",)
    assert _only(findings, "no-positive-scenario").rules == ("sign-deep-buttock-ache-again",)
    # most serious first
    order = [f.severity for f in findings]
    assert order == sorted(order, key=("problem", "warning", "note").index)


def test_broken_copy_in_the_rulebook(broken: dict, source: Path) -> None:
    md = rulebook(broken["rules"], source=source, fmt="markdown", scenarios=SCENARIO_DIR)
    html = rulebook(broken["rules"], source=source, fmt="html", scenarios=SCENARIO_DIR)
    file, line = broken["quote"]
    for text in (md, html):
        assert "✗ NOT FOUND" in text
        assert f"{file}:{line}" in text
        assert "unused_knob" in text
    data = build_audit(broken["rules"], source.read_text(encoding="utf-8"), None)
    assert data.rule("escalation-persisting-pain-review").quote_status == "not-found"
    assert data.counts["quotes_not_found"] == 1
    assert [s.heading for s in data.sections if s.in_source is False] == ["Signs of Trunk Sway"]
    # markup in a rule's title is shown as text, never interpreted
    assert '<b>"in"</b>' not in html
    assert "Deep ache &lt;b&gt;&quot;in&quot;&lt;/b&gt; &amp; the buttock" in html


def test_uncovered_guidance_unread_fields_and_impossible_rules(tmp_path: Path) -> None:
    body = rules_body({"pain-sign": "{field: back_pain.worse_with_prolonged_standing_or_walking, is: true}",
                       "impossible": "{all: [{field: symptoms.deep_buttock_ache, is: true}, "
                                     "{field: symptoms.deep_buttock_ache, is: false}]}"})
    rules = cdss.load_rules(write_rule_set(tmp_path / "set", body))
    findings = audit_findings(rules, [])
    never = _only(findings, "never-fires")
    assert never.rules == ("impossible",) and never.file == "set/pack.yaml"
    assert never.line == _line_of((tmp_path / "set" / "pack.yaml").read_text(encoding="utf-8"), "when: {all:")
    uncovered = {f.message.split()[1] for f in findings if f.kind == "guidance-not-covered"}
    assert "G-RED-1" in uncovered and "G-SIGN-1" not in uncovered
    unread = {f.message.split("'")[1]: f for f in findings if f.kind == "unread-field"}
    assert "back_pain.worse_with_prolonged_standing_or_walking" not in unread
    field = unread["red_flags.significant_leg_weakness"]
    assert field.file.endswith("patient.schema.json") and "screening verdict" in field.message
    schema_text = (ROOT / "schemas" / "patient.schema.json").read_text(encoding="utf-8")
    assert field.line == _line_of(schema_text, '"significant_leg_weakness"')
    # an empty scenario list: every rule lacks scenarios
    assert {f.rules for f in findings if f.kind == "no-positive-scenario"} == {("pain-sign",), ("impossible",)}
    ghost = Scenario("names a rule that does not exist", str(tmp_path / "s.yaml"), 4, {}, {}, {"fired": ["no-such-rule"]})
    ghost_finding = _only(audit_findings(rules, [ghost]), "scenario-unknown-rule")
    assert ghost_finding.line == 4 and "no-such-rule" in ghost_finding.message


# ------------------------------------------------------------------ conditions in plain English

F = patient_fields()
BLADDER = F["red_flags.sudden_bladder_or_bowel_control_loss"]
TREND = F["back_pain.trend"]
WEEKS = F["exercise.weeks_consistent"]
PARAMS = {"escalation_refer_weeks": 6, "dedicated_effort_min_weeks": 1}
UNITS = {"escalation_refer_weeks": "weeks", "dedicated_effort_min_weeks": "weeks"}


@pytest.mark.parametrize(("leaf", "expected"), [
    (Leaf(BLADDER, "is", True), "sudden loss of bladder or bowel control is reported "
                                "(red_flags.sudden_bladder_or_bowel_control_loss is yes)"),
    (Leaf(BLADDER, "is", False), "sudden loss of bladder or bowel control is answered no "
                                 "(red_flags.sudden_bladder_or_bowel_control_loss is no)"),
    (Leaf(BLADDER, "is", "unknown"), "sudden loss of bladder or bowel control is not answered "
                                     "(red_flags.sudden_bladder_or_bowel_control_loss is unknown (not answered))"),
    (Leaf(BLADDER, "is", "known"), "sudden loss of bladder or bowel control is answered "
                                   "(red_flags.sudden_bladder_or_bowel_control_loss is answered)"),
    (Leaf(TREND, "equals", "worsening"),
     "course of the pain over the exercise programme: worsening (back_pain.trend = worsening)"),
    (Leaf(TREND, "in", ("unchanged", "worsening")),
     "course of the pain over the exercise programme: unchanged or worsening (back_pain.trend is one of unchanged, worsening)"),
    (Leaf(TREND, "is", "unknown"), "course of the pain over the exercise programme is not recorded "
                                   "(back_pain.trend is unknown (not answered))"),
    (Leaf(WEEKS, "gte", ParamRef("escalation_refer_weeks")),
     "weeks of consistent targeted glute strengthening is at least 6 weeks "
     "(exercise.weeks_consistent ≥ escalation_refer_weeks (currently 6 weeks))"),
    (Leaf(WEEKS, "gte", ParamRef("dedicated_effort_min_weeks")),
     "weeks of consistent targeted glute strengthening is at least 1 week "
     "(exercise.weeks_consistent ≥ dedicated_effort_min_weeks (currently 1 week))"),
    (Leaf(WEEKS, "gt", 2), "weeks of consistent targeted glute strengthening is more than 2 (exercise.weeks_consistent > 2)"),
    (Leaf(WEEKS, "lte", 3), "weeks of consistent targeted glute strengthening is at most 3 (exercise.weeks_consistent ≤ 3)"),
    (Leaf(WEEKS, "lt", 4), "weeks of consistent targeted glute strengthening is less than 4 (exercise.weeks_consistent < 4)"),
    (Leaf(WEEKS, "equals", 5), "weeks of consistent targeted glute strengthening is exactly 5 (exercise.weeks_consistent = 5)"),
    (Leaf(WEEKS, "is", "unknown"), "weeks of consistent targeted glute strengthening is not recorded "
                                   "(exercise.weeks_consistent is unknown (not answered))"),
])
def test_each_operator_in_plain_english(leaf: Leaf, expected: str) -> None:
    clause = describe_condition(leaf, PARAMS, UNITS)
    assert clause.plain == expected
    assert clause.children == ()


def test_combinators_in_plain_english() -> None:
    tree = All((Leaf(BLADDER, "is", True),
                AnyOf((Leaf(TREND, "is", "unknown"), Not(Leaf(WEEKS, "lt", ParamRef("escalation_refer_weeks"))))),
                Not(AnyOf((Leaf(TREND, "equals", "improving"), Leaf(BLADDER, "is", False))))))
    clause = describe_condition(tree, PARAMS, UNITS)
    assert clause.lines() == [
        "all of:",
        "  sudden loss of bladder or bowel control is reported (red_flags.sudden_bladder_or_bowel_control_loss is yes)",
        "  any of:",
        "    course of the pain over the exercise programme is not recorded (back_pain.trend is unknown (not answered))",
        "    it is not the case that weeks of consistent targeted glute strengthening is less than 6 weeks "
        "(exercise.weeks_consistent < escalation_refer_weeks (currently 6 weeks))",
        "  it is not the case that",
        "    any of:",
        "      course of the pain over the exercise programme: improving (back_pain.trend = improving)",
        "      sudden loss of bladder or bowel control is answered no (red_flags.sudden_bladder_or_bowel_control_loss is no)",
    ]
    assert isinstance(clause.children[0], Clause) and clause.children[0].field == BLADDER.path


def test_rulebook_shows_conditions_as_if_then(bundled: cdss.RuleSet) -> None:
    md = rulebook(bundled, source=None, fmt="markdown")
    assert ("**IF** sudden loss of bladder or bowel control is reported "
            "(`red_flags.sudden_bladder_or_bowel_control_loss` is yes)") in md
    assert "**THEN**" in md
    html = rulebook(bundled, source=None, fmt="html")
    assert ">IF<" in html and ">THEN<" in html
    assert "sudden loss of bladder or bowel control is reported" in html


# ------------------------------------------------------------------ rulebook ↔ results


def test_the_digest_on_the_rulebook_is_the_digest_of_results(bundled: cdss.RuleSet) -> None:
    digest = cdss.evaluate({"red_flags": {"significant_leg_weakness": True}}).to_dict()["rule_set"]["digest"]
    assert digest.startswith("sha256:")
    assert build_audit(bundled, None, None).digest == digest
    for fmt in ("markdown", "html"):
        text = rulebook(bundled, source=None, fmt=fmt)
        assert digest in text
    html = rulebook(bundled, source=None, fmt="html")
    assert f'<meta name="cdss-rule-set-digest" content="{digest}">' in html


def test_every_card_of_example_results_has_its_rule_anchor(bundled: cdss.RuleSet, source: Path) -> None:
    html = rulebook(bundled, source=source, fmt="html")
    md = rulebook(bundled, source=source, fmt="markdown")
    anchors = set(re.findall(r'id="(rule-[a-z0-9-]+)"', html))
    assert anchors == {f"rule-{r.id}" for r in bundled.rules}
    seen = set()
    for name in ("classic-beginner", "red-flag-leg-weakness", "escalation-week-6", "hip-drop-both-sides",
                 "all-red-flags-unknown", "progression-gate-met", "compound-stage"):
        patient = json.loads((PATIENTS / f"{name}.json").read_text(encoding="utf-8"))
        for card in cdss.evaluate(patient).to_dict()["cards"]:
            seen.add(card["rule"])
            assert f"rule-{card['rule']}" in anchors
            assert f'<a id="rule-{card["rule"]}"></a>' in md
            assert f'href="#rule-{card["rule"]}"' in html
    assert len(seen) >= 10


# ------------------------------------------------------------------ renderings


def test_rulebook_header_sign_off_and_pack_metadata(bundled: cdss.RuleSet, source: Path) -> None:
    for fmt in ("markdown", "html"):
        text = rulebook(bundled, source=source, fmt=fmt)
        for needle in (bundled.info.id, bundled.info.version, bundled.info.title.split("(")[0].strip(), cdss.__version__,
                       "Do Weak Glutes Cause Back Pain?", "Sign-off", "Reviewer name", "Date", "Signature",
                       "Pending clinical sign-off", "cdss developers", "2026-11-26", "✓ found verbatim", "Coverage",
                       "Findings", "exclusive-pair", "examples/scenarios/", "G-ESC-3"):
            assert needle in text, (fmt, needle)
        assert text.count("Pack: ") >= len(bundled.loaded.packs)


def test_without_a_source_quotes_are_not_checked(basic_rules: cdss.RuleSet, bundled: cdss.RuleSet) -> None:
    data = build_audit(bundled, None, None)
    assert not data.source_given
    assert {e.quote_status for e in data.rules} == {"not-checked"}
    assert all(s.in_source is None for s in data.sections)
    assert not any(f.kind in ("quote-not-found", "section-not-in-source") for f in data.findings)
    md = rulebook(basic_rules, source=None, fmt="markdown")  # declares no source: nothing to check against
    assert md.count("not checked (no source declared or given)") >= len(basic_rules.rules)
    assert "✓ found verbatim in the source" not in md and "NOT FOUND in the source" not in md


def test_markdown_is_clean_gfm(bundled: cdss.RuleSet, source: Path) -> None:
    md = rulebook(bundled, source=source, fmt="markdown")
    assert md.startswith("# Rulebook: ")
    assert "<script" not in md and "<style" not in md
    for line in md.splitlines():
        if line.startswith("|"):
            assert line.endswith("|"), line  # no table row broken over lines
    assert "\n\n\n" not in md


def test_html_is_one_self_contained_page(bundled: cdss.RuleSet, source: Path) -> None:
    html = rulebook(bundled, source=source, fmt="html")
    assert html.startswith("<!DOCTYPE html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert html.count("<style>") == 1 and "@media print" in html and "page-break-inside:avoid" in html
    lowered = html.lower()
    for forbidden in ("<script", "<link", "<img", "<iframe", "@import", "url(", "src=", "http://", "https://"):
        assert forbidden not in lowered, forbidden
    assert re.findall(r'href="([^"#][^"]*)"', html) == []  # in-page links only
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "duplicate ids"
    targets = set(re.findall(r'href="#([^"]+)"', html))
    assert targets <= set(ids), targets - set(ids)


def test_unknown_format_is_refused(bundled: cdss.RuleSet) -> None:
    with pytest.raises(ValueError, match="markdown, html"):
        rulebook(bundled, source=None, fmt="pdf")


def test_default_scenarios_are_the_examples_beside_the_rules(bundled: cdss.RuleSet) -> None:
    md = rulebook(bundled, source=None, fmt="markdown")
    assert "`examples/scenarios`" in md
    assert "must not fire" in md


# ------------------------------------------------------------------ the command line


def test_cli_audit_writes_the_html_rulebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            bundled: cdss.RuleSet, source: Path) -> None:
    from click.testing import CliRunner

    from cdss.cli import cli

    monkeypatch.setenv("CDSS_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "x.html"
    result = CliRunner().invoke(cli, ["audit", "--source", str(source), "--format", "html", "--output", str(out)],
                                prog_name="cdss")
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert bundled.info.digest in html
    assert html.count("✓ found verbatim in the source") == len(bundled.rules)
    assert all(f'id="rule-{r.id}"' in html for r in bundled.rules)
    assert "examples/scenarios/" in html
