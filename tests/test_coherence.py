"""Clinical coherence (issue 17): the rule-language relations and what every surface shows.

Loader errors name file:line and the rule; results carry questions, conflicts, review status and
scope; CDS Hooks hosts that show only cards still see the dose, the questions and the scope.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import jsonschema
import pytest
from click.testing import CliRunner

import cdss
from cdss.cli.commands import cli
from cdss.loader import collect
from cdss.resources import schema
from tests.helpers import ALL_NO, rules_body, write_rule_set
from tests.test_loader_errors import line_of, load_error

RULES = cdss.load_rules()
GOOD_WHEN = "{field: back_pain.present, is: true}"


def _with(body: str, rule_id: str, extra: str) -> str:
    """Insert YAML lines (indented 4) after the `priority:` line of one rule of a rules_body()."""
    head, sep, tail = body.partition(f"  - id: {rule_id}\n")
    return head + sep + tail.replace("    priority: 10\n", "    priority: 10\n" + extra, 1)


# ---------------------------------------------------------------- loader: relations and questions


def test_supersedes_an_unknown_rule_names_the_line_and_the_nearest_id(tmp_path: Path) -> None:
    body = _with(rules_body({"heavy": GOOD_WHEN, "light-rule": GOOD_WHEN}), "heavy", "    supersedes: [light-rul]\n")
    error = load_error(tmp_path, body)
    assert error.rule_id == "heavy" and error.line == line_of(tmp_path / "pack.yaml", "light-rul]")
    assert "supersedes 'light-rul'" in str(error) and "did you mean 'light-rule'" in str(error)


def test_a_supersedes_cycle_is_refused(tmp_path: Path) -> None:
    body = rules_body({"a-rule": GOOD_WHEN, "b-rule": GOOD_WHEN, "c-rule": GOOD_WHEN})
    body = _with(body, "a-rule", "    supersedes: [b-rule]\n")
    body = _with(body, "b-rule", "    supersedes: [c-rule]\n")
    body = _with(body, "c-rule", "    supersedes: [a-rule]\n")
    error = load_error(tmp_path, body)
    assert "cycle" in str(error) and "a-rule -> b-rule -> c-rule -> a-rule" in str(error)
    assert error.line is not None


def test_a_rule_cannot_supersede_itself(tmp_path: Path) -> None:
    error = load_error(tmp_path, _with(rules_body({"self-rule": GOOD_WHEN}), "self-rule", "    supersedes: [self-rule]\n"))
    assert "cannot supersede itself" in str(error)


def test_a_question_on_a_field_the_rule_does_not_read_is_refused(tmp_path: Path) -> None:
    extra = "    questions:\n      - {field: exercise.stage, reason: Which stage?}\n"
    error = load_error(tmp_path, _with(rules_body({"q-rule": GOOD_WHEN}), "q-rule", extra))
    assert error.rule_id == "q-rule" and "does not read" in str(error)
    assert error.line == line_of(tmp_path / "pack.yaml", "exercise.stage")


def test_a_question_reason_may_only_name_declared_parameters(tmp_path: Path) -> None:
    extra = "    questions:\n      - {field: back_pain.present, reason: \"From {{ params.nope }} weeks\"}\n"
    error = load_error(tmp_path, _with(rules_body({"q-rule": GOOD_WHEN}), "q-rule", extra))
    assert "params.nope" in str(error)


@pytest.mark.parametrize("text", ["The source says so.", "This rule fires on pain.", "Local policy: 4 weeks."])
def test_internal_words_in_a_card_are_a_warning_with_the_line(tmp_path: Path, text: str) -> None:
    body = rules_body({"word-rule": GOOD_WHEN}).replace("detail: detail", f"detail: \"{text}\"")
    write_rule_set(tmp_path, body)
    loaded, problems = collect(tmp_path)
    words = [p for p in problems if "speak plainly" in p.message]
    assert loaded is not None and words and all(p.severity == "warning" and p.rule_id == "word-rule" for p in words)
    assert words[0].line == line_of(tmp_path / "pack.yaml", text)


def test_within_weeks_needs_weeks(tmp_path: Path) -> None:
    """A concrete deadline is data: `timeframe: within-weeks` without `weeks` (or the reverse) is an error."""
    for referral in ("{to: [physician], timeframe: within-weeks, reason: pain}",
                     "{to: [physician], timeframe: routine, weeks: 2, reason: pain}"):
        body = rules_body({"ref-rule": GOOD_WHEN}).replace('detail: detail}', f'detail: detail}}\n      referral: {referral}')
        write_rule_set(tmp_path, body)
        loaded, problems = collect(tmp_path)
        assert loaded is None and any("within-weeks and `weeks` go together" in p.message for p in problems)


def test_the_review_refers_within_weeks_and_fhir_says_routine_with_a_deadline() -> None:
    doc = {"back_pain": {"present": True}, "red_flags": NEG, "exercise": {"stage": "activation", "weeks_consistent": 4}}
    assessment = RULES.evaluate(doc)
    referrals = [c for c in assessment.cards if "referral" in c]
    assert [c["rule"] for c in referrals] == ["escalation-persisting-pain-review"]
    assert referrals[0]["referral"] == {
        "to": ["physical therapist", "physician"], "timeframe": "within-weeks",
        "reason": ("Back pain persisting after 4 or more weeks of consistent targeted glute strengthening; "
                   "a professional review is needed."), "within": "within 2 weeks", "weeks": 2}
    other = RULES.with_parameters({"professional_evaluation_within_weeks": 3}).evaluate(doc).cards
    assert [c["referral"]["weeks"] for c in other if "referral" in c] == [3]
    hooks = [c for c in assessment.to_cds_hooks()["cards"] if "referral" in c["extension"]["invalid.cdss"]]
    assert hooks[0]["extension"]["invalid.cdss"]["referral"]["timeframe"] == "within-weeks"
    text = _text(doc)
    assert "Referrals (1)" in text and "within 2 weeks" in text


def test_a_soon_referral_is_a_warning(tmp_path: Path) -> None:
    """A warning, not an error: rule sets written before issue 17 (and `cdss diff` against them) still load."""
    body = rules_body({"ref-rule": GOOD_WHEN}).replace(
        'detail: detail}', 'detail: detail}\n      referral: {to: [physician], timeframe: soon, reason: pain}')
    write_rule_set(tmp_path, body)
    loaded, problems = collect(tmp_path)
    assert loaded is not None
    assert [p.severity for p in problems if "within" in p.message] == ["warning"]


def test_superseding_a_retired_rule_is_a_warning(tmp_path: Path) -> None:
    body = _with(rules_body({"heavy": GOOD_WHEN, "light-rule": GOOD_WHEN}), "heavy", "    supersedes: [light-rule]\n")
    body = _with(body, "light-rule", "    status: retired\n")
    write_rule_set(tmp_path, body)
    loaded, problems = collect(tmp_path)
    assert loaded is not None and any("retired: no effect" in p.message and p.severity == "warning" for p in problems)


def _manifest(tmp_path: Path, extra: str) -> None:
    (tmp_path / "ruleset.yaml").write_text("rule_set:\n  id: test-set\n  title: Test set\n  version: 0.0.1\n" + extra,
                                           encoding="utf-8")


def test_a_conflict_may_not_discard_a_red_flag(tmp_path: Path) -> None:
    write_rule_set(tmp_path, rules_body({"ok-rule": GOOD_WHEN}))
    _manifest(tmp_path, "conflicts:\n  - id: bad\n    fields: [red_flags.significant_leg_weakness]\n"
                        "    when: {field: red_flags.significant_leg_weakness, is: true}\n    message: m\n")
    with pytest.raises(cdss.RuleFileError) as info:
        cdss.load_rules(tmp_path)
    assert "red-flag answer is never discarded" in str(info.value) and info.value.line is not None


def test_a_conflict_names_only_fields_its_condition_reads(tmp_path: Path) -> None:
    write_rule_set(tmp_path, rules_body({"ok-rule": GOOD_WHEN}))
    _manifest(tmp_path, "conflicts:\n  - id: odd\n    fields: [exercise.stage]\n"
                        "    when: {field: back_pain.present, is: false}\n    message: m\n")
    with pytest.raises(cdss.RuleFileError) as info:
        cdss.load_rules(tmp_path)
    assert "not read by its `when`" in str(info.value)


def test_a_signed_off_rule_set_says_so_and_an_unreviewed_one_names_its_packs(tmp_path: Path) -> None:
    write_rule_set(tmp_path, rules_body({"ok-rule": GOOD_WHEN}))
    assert cdss.load_rules(tmp_path).evaluate({}).to_dict()["review"] == {"status": "pending", "pending_packs": ["test-pack"]}
    pack = tmp_path / "pack.yaml"
    pack.write_text(pack.read_text().replace("{name: Not for clinical use}",
                                             "{name: Dr Test, reviewed: \"2026-11-27\"}"), encoding="utf-8")
    signed = cdss.load_rules(tmp_path).evaluate({})
    assert signed.to_dict()["review"] == {"status": "signed-off", "pending_packs": []}
    assert not any(c["extension"]["invalid.cdss"].get("review") for c in signed.to_cds_hooks()["cards"])


# ---------------------------------------------------------------- what every surface shows

NEG = dict(ALL_NO)


def test_every_result_carries_questions_conflicts_review_and_scope_and_validates() -> None:
    validator = jsonschema.Draft202012Validator(schema("result"))
    for doc in ({}, {"red_flags": NEG}, {"back_pain": {"present": False, "trend": "worsening"}, "red_flags": NEG}):
        for trace in (False, True):
            assessment = RULES.evaluate(doc, trace=trace)
            result = assessment.to_dict()
            validator.validate(result)
            assert json.loads(assessment.to_json()) == result
            assert result["scope"]["not_covered"] and result["review"]["status"] == "pending"
            assert {"questions", "conflicts"} <= set(result)
    assert RULES.evaluate({"back_pain": {"present": False, "trend": "worsening"}, "red_flags": NEG}).conflicts


def test_cds_hooks_cards_carry_the_dose_the_consistency_the_questions_the_review_and_the_scope() -> None:
    doc = {"back_pain": {"present": True, "trend": "worsening"}, "red_flags": NEG}
    cards = RULES.evaluate(doc).to_cds_hooks()["cards"]
    text = " ".join(" ".join(c["summary"] + " " + c["detail"] for c in cards).split())  # Markdown line breaks
    assert "2 to 3 sets of 10 to 15 repetitions" in text and "at least 3 days every week" in text
    kinds = [next(iter(c["extension"]["invalid.cdss"])) for c in cards]
    assert "questions" in kinds and "review" in kinds and "scope" in kinds
    question_card = next(c for c in cards if "questions" in c["extension"]["invalid.cdss"])
    assert question_card["indicator"] == "warning" and "Weeks of consistent targeted glute strengthening" in question_card["detail"]
    assert "exercise.weeks_consistent" not in question_card["detail"]  # plain words, the path stays in the extension
    assert question_card["extension"]["invalid.cdss"]["questions"][0]["field"] == "exercise.weeks_consistent"
    assert [c["indicator"] for c in cards] == sorted((c["indicator"] for c in cards),
                                                     key=["critical", "warning", "info"].index)
    scope_card = next(c for c in cards if "scope" in c["extension"]["invalid.cdss"])
    assert "saddle" in scope_card["detail"] and "cancer" in scope_card["detail"]
    assert all(len(c["summary"]) < 140 for c in cards)
    assert len({c["uuid"] for c in cards}) == len(cards)
    assert RULES.evaluate(doc).to_cds_hooks() == RULES.evaluate(doc).to_cds_hooks()  # deterministic


def test_a_conflict_becomes_a_warning_card() -> None:
    doc = {"back_pain": {"present": False}, "red_flags": NEG, "exercise": {"stage": "none", "weeks_consistent": 3}}
    cards = RULES.evaluate(doc).to_cds_hooks()["cards"]
    conflict = [c for c in cards if "conflicts" in c["extension"]["invalid.cdss"]]
    assert len(conflict) == 1 and conflict[0]["indicator"] == "warning"


def _text(doc: dict, *args: str) -> str:
    result = CliRunner().invoke(cli, ["evaluate", "--format", "text", *args, "-"], input=json.dumps(doc))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("doc", [
    {}, {"red_flags": NEG}, {"back_pain": {"present": True, "trend": "worsening"}, "red_flags": NEG},
    {"back_pain": {"present": True}, "red_flags": NEG, "exercise": {"stage": "compound", "weeks_consistent": 0}},
])
def test_the_text_never_reassures_while_a_question_is_open(doc: dict) -> None:
    text = _text(doc)
    for words in ("nothing in the rules calls for a professional", "NO RULE APPLIES", "SEE A PROFESSIONAL: arrange"):
        assert words not in text
    assert "Questions to answer" in text and "What this screen does not check" in text
    assert "NOT CLINICALLY REVIEWED" in text


def test_the_empty_document_asks_the_red_flags_first() -> None:
    text = _text({})
    assert "ANSWER THE RED-FLAG QUESTIONS FIRST" in text
    first = text.index("Questions to answer")
    questions = text[first:text.index("\n\n", first)]
    assert questions.index("Numbness or tingling") < questions.index("Low back pain or discomfort now")
    assert "red_flags." not in questions and "back_pain.present" not in questions  # plain words, not field paths


def test_explain_says_which_rule_was_suppressed_by_which() -> None:
    doc = {"back_pain": {"present": True, "trend": "worsening"},
           "red_flags": dict(NEG, numbness_or_tingling_radiating_down_leg=True), "exercise": {"weeks_consistent": 8}}
    text = _text(doc, "--explain")
    assert "an emergency result stands alone, led by red-flag-radiating-numbness-tingling" in text
    assert "superseded by escalation-pain-constant-or-worsening" in text  # refer gives way to the heavier escalation
    two = dict(NEG, numbness_or_tingling_radiating_down_leg=True, significant_leg_weakness=True)
    assert "referral merged into red-flag-radiating-numbness-tingling" in _text({"red_flags": two}, "--explain")
    referrals = text[text.index("Referrals ("):text.index("Cards (")]
    assert referrals.count("* to ") == 1 and "with back discomfort" not in referrals


def test_an_emergency_stands_alone_in_json_and_cds_hooks() -> None:
    """The review's finding: an emergency carried 'Deep buttock ache ... mistaken for sciatica' and a questions card."""
    doc = {"back_pain": {"present": True}, "symptoms": {"deep_buttock_ache": True},
           "red_flags": dict(NEG, numbness_or_tingling_radiating_down_leg=True)}
    assessment = RULES.evaluate(doc)
    result = assessment.to_dict()
    assert [c["rule"] for c in result["cards"]] == ["red-flag-radiating-numbness-tingling"]
    assert result["questions"] == [] and "deep-buttock-ache" in {f["code"] for f in result["findings"]}
    hooks = assessment.to_cds_hooks()["cards"]
    assert hooks[0]["indicator"] == "critical"
    assert [c["extension"]["invalid.cdss"].get("kind") for c in hooks[1:]] == ["review", "scope"]
    assert "sciatica" not in json.dumps(hooks)


def test_a_referral_says_when_in_plain_words() -> None:
    doc = {"back_pain": {"present": True, "trend": "worsening"}, "red_flags": NEG,
           "exercise": {"stage": "activation", "weeks_consistent": 2}}
    card = next(c for c in RULES.evaluate(doc).cards if "referral" in c)
    assert card["referral"]["within"] == "within 2 weeks" and "within 2 weeks" in " ".join(card["detail"].split())
    assert "within 3 weeks" in _text(doc, "--param", "professional_evaluation_within_weeks=3")


def test_evaluate_many_gives_the_same_questions_conflicts_and_relations_as_evaluate() -> None:
    docs = [{}, {"red_flags": NEG}, {"back_pain": {"present": False, "trend": "worsening"}, "red_flags": NEG},
            {"back_pain": {"present": True, "trend": "worsening"}, "exercise": {"weeks_consistent": 8},
             "red_flags": dict(NEG, numbness_or_tingling_radiating_down_leg=True, significant_leg_weakness=True)}]
    many = list(RULES.evaluate_many(docs))
    assert [a.to_json() for a in many] == [RULES.evaluate(d).to_json() for d in docs]
    assert many[2].conflicts and many[1].questions


def test_the_rule_set_snapshot_keeps_relations_questions_conflicts_and_scope() -> None:
    """The CLI caches the loaded rule set as data: a cached copy must not lose a relation."""
    from cdss import snapshot

    loaded = RULES.loaded
    text = snapshot.dump(loaded)
    assert text is not None
    back = snapshot.load(text, loaded.root)
    assert back == loaded
    assert back.conflicts == loaded.conflicts and back.scope == loaded.scope
    assert {r.id: (r.supersedes, r.questions) for r in back.rules} == {r.id: (r.supersedes, r.questions) for r in loaded.rules}


def test_an_emergency_that_stands_alone_withholds_exercise_advice_without_a_red_flag(tmp_path: Path) -> None:
    """`stands_alone: [emergency]` means the emergency speaks alone even when no red flag is present (a
    rule of another category may ask for urgency emergency): no exercise plan beside it, in the data
    and in the JSON text alike."""
    import shutil

    root = tmp_path / "rules"
    shutil.copytree(Path(__file__).parent / "fixtures" / "basic", root)
    manifest = root / "ruleset.yaml"
    manifest.write_text(manifest.read_text(encoding="utf-8") + "stands_alone: [emergency]\n", encoding="utf-8")
    pack = root / "pack.yaml"
    pack.write_text(pack.read_text(encoding="utf-8") + textwrap.indent(textwrap.dedent("""\
          - id: urgent-referral
            title: Urgent referral without a red flag
            category: escalation
            indicator: critical
            urgency: emergency
            priority: 950
            guidance: [G-RED-2]
            source: {section: When Glute Strengthening Isn’t Enough, quote: significant leg weakness}
            when: {field: back_pain.trend, equals: worsening}
            then:
              card: {summary: Go to the emergency department now, detail: Urgent.}
        """), "  "), encoding="utf-8")
    rules = cdss.load_rules(root)
    doc = {"red_flags": dict(ALL_NO), "back_pain": {"present": True, "trend": "worsening"},
           "exercise": {"stage": "activation", "weeks_consistent": 1}}
    calm = rules.evaluate({**doc, "back_pain": {"present": True, "trend": "improving"}})
    assert calm.plan["status"] == "recommended" and calm.plan["exercises"]  # the exercise rule fires here
    result = rules.evaluate(doc)
    assert result.red_flag_screening == "negative" and result.urgency == "emergency"
    assert result.plan == {"status": "withheld", "phase": None, "exercises": [],
                           "notes": ["Exercise advice is withheld: this needs immediate medical attention first."]}
    assert [c["rule"] for c in result.cards] == ["urgent-referral"]
    assert result.to_json() == json.dumps(result.to_dict(), ensure_ascii=False, separators=(",", ":"))
