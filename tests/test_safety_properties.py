"""Property-based proof of the safety invariants on the BUNDLED rules (issue 5).

Documents come from tests/strategies.py (derived from schemas/patient.schema.json); the
checks are the plain functions of tests/invariants.py, which tests/test_mutation.py also
runs against broken rules. Profiles (tests/conftest.py): `ci` (default) runs at least
1,000 derandomized examples per invariant; `--hypothesis-profile=thorough` runs 100,000.
"""

from __future__ import annotations

import itertools
import json
import threading
from functools import cache
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import cdss
from tests.invariants import (
    URGENCY_ORDER,
    check_all_clear_screening_never_emergency,
    check_cards_are_sourced_and_agree_with_trace,
    check_deterministic,
    check_more_weeks_never_lower_urgency,
    check_red_flag_means_emergency,
    check_unknown_red_flag_is_never_all_clear,
    check_weak_side_named_only_when_observed,
    check_yes_never_lowers_urgency,
    check_card_texts_speak_plainly,
    check_compound_plan_only_when_gate_met,
    check_conflicts_exactly_when_documented,
    check_emergency_carries_one_referral,
    check_emergency_stands_alone,
    check_one_referral_per_destination,
    check_urgency_raising_questions_are_asked,
)
from tests.strategies import (
    ABSENT,
    NearValid,
    get,
    invalid_values,
    leaves,
    near_valid_patients,
    patients_with_screening,
    put,
    tristate_paths,
    valid_patients,
    MUTATIONS,
    coherence_patients,
)

RULES = cdss.load_rules()  # loaded once per module
FRESH = cdss.load_rules()  # a second, independently loaded copy (determinism across loads)

REVIEW_RULE = "escalation-persisting-pain-review"
REFER_RULE = "escalation-persisting-pain-refer"
REVIEW, REFER = "escalation_review_weeks", "escalation_refer_weeks"
MAX_WEEKS = 520

any_patient = st.one_of(valid_patients(), patients_with_screening("positive"),
                        patients_with_screening("incomplete"), patients_with_screening("negative"))


# ------------------------------------------------------------------ the strategies themselves


def _token(leaf: Any, value: Any) -> Any:
    """What kind of value a leaf holds, at the granularity the generator must reach."""
    if value is ABSENT or value is None or isinstance(value, bool):
        return value
    if leaf.kind == "integer":
        return value if value in (leaf.node.get("minimum"), leaf.node.get("maximum")) else "some integer"
    if leaf.kind == "string":
        return "longest string" if len(value) == leaf.node.get("maxLength") else "some string"
    return value


def test_generated_documents_reach_every_value_and_absence_of_each_field() -> None:
    """The generator is not vacuous: each field is seen absent, null, and with every kind of value."""
    wanted: set[tuple[str, Any]] = set()
    for leaf in leaves():
        values: list[Any] = [ABSENT] + ([None] if leaf.nullable else [])
        if leaf.kind == "tristate":
            values += [True, False]
        elif leaf.kind == "enum":
            values += [v for v in leaf.node["enum"] if v is not None]
        elif leaf.kind == "integer":
            values += [leaf.node["minimum"], leaf.node["maximum"], "some integer"]
        elif leaf.kind == "string":
            values += ["some string", "longest string"]
        wanted |= {(leaf.json_path, v) for v in values}
    seen: set[tuple[str, Any]] = set()

    @settings(max_examples=2000, database=None)
    @given(valid_patients())
    def collect(doc: dict[str, Any]) -> None:
        seen.update((leaf.json_path, _token(leaf, get(doc, leaf.path))) for leaf in leaves())

    collect()
    assert wanted - seen == set()


# ------------------------------------------------------------------ 1-3: red-flag screening


@given(patients_with_screening("positive"))
def test_any_red_flag_yes_is_an_emergency_whatever_else_is_true(doc: dict[str, Any]) -> None:
    check_red_flag_means_emergency(RULES, doc)


@given(patients_with_screening("incomplete"))
def test_an_unknown_red_flag_is_never_an_all_clear(doc: dict[str, Any]) -> None:
    check_unknown_red_flag_is_never_all_clear(RULES, doc)


@given(patients_with_screening("negative"))
def test_all_red_flags_answered_no_never_give_an_emergency(doc: dict[str, Any]) -> None:
    check_all_clear_screening_never_emergency(RULES, doc)


def test_the_three_screening_verdicts_cover_every_red_flag_combination() -> None:
    """Exhaustive over the 4^3 ways to answer the red flags (yes/no/null/absent): some check applies to each."""
    for values in itertools.product([True, False, None, ABSENT], repeat=3):
        doc: dict[str, Any] = {"back_pain": {"present": True}}
        for path, value in zip(sorted(p for p in tristate_paths() if p.startswith("red_flags.")), values):
            doc = put(doc, path, value)
        check_red_flag_means_emergency(RULES, doc)
        check_unknown_red_flag_is_never_all_clear(RULES, doc)
        check_all_clear_screening_never_emergency(RULES, doc)


# ------------------------------------------------------------------ laterality


@given(any_patient)
def test_a_weak_side_is_named_only_for_the_leg_the_hip_drop_was_observed_standing_on(doc: dict[str, Any]) -> None:
    check_weak_side_named_only_when_observed(RULES, doc)


# ------------------------------------------------------------------ 4: monotonicity


@given(any_patient)
def test_answering_yes_to_any_question_never_lowers_urgency(doc: dict[str, Any]) -> None:
    """Every yes/no field of the document that is no, null or absent is turned to yes, one at a time."""
    check_yes_never_lowers_urgency(RULES, doc)


@given(any_patient, st.sampled_from(["unchanged", "worsening"]), st.integers(0, MAX_WEEKS), st.integers(0, MAX_WEEKS))
def test_more_weeks_with_pain_unchanged_or_worsening_never_lower_urgency(doc: dict[str, Any], trend: str,
                                                                          a: int, b: int) -> None:
    low, high = sorted((a, b))
    doc = put(put(doc, "back_pain.trend", trend), "exercise.weeks_consistent", low)
    check_more_weeks_never_lower_urgency(RULES, doc, more=(high - low,) if high > low else (1,))


# ------------------------------------------------------------------ 5: escalation parameters


@cache
def escalation_parameters() -> tuple[str, ...]:
    """The overridable parameters declared by the escalation pack."""
    packs = {RULES.rule(REVIEW_RULE).pack, RULES.rule(REFER_RULE).pack}
    return tuple(sorted(name for name, p in RULES.parameters.items() if p.pack in packs and p.overridable))


def _range(name: str) -> range:
    param = RULES.parameters[name]
    assert param.minimum is not None and param.maximum is not None, f"{name} has no declared bounds"
    return range(int(param.minimum), int(param.maximum) + 1)


@cache
def allowed_combinations() -> tuple[tuple[tuple[str, int], ...], ...]:
    """Every combination of the escalation parameters' declared values that the rule set accepts."""
    names = escalation_parameters()
    combos = []
    for values in itertools.product(*(_range(n) for n in names)):
        combo = tuple(zip(names, values))
        try:
            rule_set(combo)
        except cdss.ParameterError:
            continue  # e.g. escalation_review_weeks above escalation_refer_weeks: refused, as it should be
        combos.append(combo)
    return tuple(combos)


@cache
def rule_set(combo: tuple[tuple[str, int], ...]) -> cdss.RuleSet:
    return RULES.with_parameters(dict(combo))


def fired(rules: cdss.RuleSet, doc: dict[str, Any]) -> set[str]:
    return set(rules.evaluate(doc, trace=True).fired)


def test_every_declared_value_of_each_escalation_parameter_is_allowed_somewhere() -> None:
    assert {REVIEW, REFER} <= set(escalation_parameters())
    assert RULES.rule(REVIEW_RULE) and RULES.rule(REFER_RULE)
    combos = [dict(c) for c in allowed_combinations()]
    for name in escalation_parameters():
        assert {c[name] for c in combos} == set(_range(name)), f"some declared value of {name} is never accepted"
    assert all(c[REVIEW] <= c[REFER] for c in combos)


persisting_pain = st.builds(
    lambda doc, trend: put(put(doc, "back_pain.present", True), "back_pain.trend", trend),
    any_patient, st.sampled_from(["unchanged", "worsening", None, ABSENT]))


@given(persisting_pain, st.data(), st.one_of(st.integers(0, 10), st.integers(0, MAX_WEEKS)))
def test_review_and_refer_fire_exactly_from_their_declared_weeks(doc: dict[str, Any], data: st.DataObject,
                                                                  weeks: int) -> None:
    """Persisting pain (present, not improving): review fires on [review, refer), refer from refer on."""
    combo = data.draw(st.sampled_from(allowed_combinations()), label="parameters")
    values = dict(combo)
    rules = rule_set(combo)
    patient = put(doc, "exercise.weeks_consistent", weeks)
    assessment = rules.evaluate(patient, trace=True)
    # contradictory answers (e.g. stage "none" with weeks of exercise) are read as unknown: not this property
    assume(not assessment.to_dict()["conflicts"])
    ids = set(assessment.fired)
    assert (REVIEW_RULE in ids) == (values[REVIEW] <= weeks < values[REFER]), f"review at week {weeks} under {values}"
    assert (REFER_RULE in ids) == (weeks >= values[REFER]), f"refer at week {weeks} under {values}"


def test_the_first_escalation_week_equals_the_declared_parameter() -> None:
    """Swept week by week: the first week review/refer fires is the parameter (review never fires if review == refer)."""
    sweep = [*range(0, 61), MAX_WEEKS]
    for combo in allowed_combinations():
        values, rules = dict(combo), rule_set(combo)
        for trend in ("unchanged", "worsening", None):
            doc = {"back_pain": {"present": True, "trend": trend}}
            by_week = {w: fired(rules, put(doc, "exercise.weeks_consistent", w)) for w in sweep}
            first_review = next((w for w in sweep if REVIEW_RULE in by_week[w]), None)
            first_refer = next((w for w in sweep if REFER_RULE in by_week[w]), None)
            first_any = next((w for w in sweep if by_week[w] & {REVIEW_RULE, REFER_RULE}), None)
            assert first_refer == values[REFER], (values, trend)
            assert first_review == (values[REVIEW] if values[REVIEW] < values[REFER] else None), (values, trend)
            assert first_any == values[REVIEW], (values, trend)


@given(any_patient, st.data())
def test_escalation_parameters_change_only_the_escalation_rules(doc: dict[str, Any], data: st.DataObject) -> None:
    combo = data.draw(st.sampled_from(allowed_combinations()), label="parameters")
    escalation = {r.id for r in RULES.rules if r.category == "escalation"}
    default = fired(RULES, doc)
    changed = fired(rule_set(combo), doc)
    assert default - escalation == changed - escalation, (
        f"parameters {dict(combo)} changed non-escalation rules: {sorted((default ^ changed) - escalation)}")


# ------------------------------------------------------------------ 6: determinism and isolation


@given(any_patient, st.lists(any_patient, max_size=4))
def test_same_document_gives_the_same_bytes_in_any_order_and_from_a_fresh_load(doc: dict[str, Any],
                                                                                others: list[dict[str, Any]]) -> None:
    check_deterministic(RULES, FRESH, doc, others)


@settings(max_examples=max(100, settings.default.max_examples // 10))  # 4 threads x 3 rounds x up to 8 patients
@given(st.lists(any_patient, min_size=1, max_size=8))
def test_four_threads_at_once_give_the_same_bytes_as_one(docs: list[dict[str, Any]]) -> None:
    expected = [RULES.evaluate(d).to_json() for d in docs]
    barrier = threading.Barrier(4)
    wrong: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def work(offset: int) -> None:
        try:
            barrier.wait()
            for round_ in range(3):
                order = list(range(len(docs)))
                order = order[offset % len(order):] + order[:offset % len(order)]
                if (offset + round_) % 2:
                    order.reverse()
                for i in order:
                    if RULES.evaluate(docs[i]).to_json() != expected[i]:
                        wrong.append((offset, i))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and wrong == []


# ------------------------------------------------------------------ 7: cards, provenance, trace


@given(doc=any_patient)
def test_every_card_is_sourced_fits_cds_hooks_and_matches_the_trace(doc: dict[str, Any], source_text: str) -> None:
    check_cards_are_sourced_and_agree_with_trace(RULES, doc, source_text)


# ------------------------------------------------------------------ 9: clinical coherence (issue 17)

coherence_patient = st.one_of(any_patient, coherence_patients())
"""Any patient, plus patients screened negative with the four plan/escalation answers drawn densely."""


@given(st.one_of(patients_with_screening("positive"), coherence_patient))
def test_an_emergency_result_carries_exactly_one_referral(doc: dict[str, Any]) -> None:
    check_emergency_carries_one_referral(RULES, doc)


@given(st.one_of(patients_with_screening("positive"), coherence_patient))
def test_an_emergency_result_stands_alone_only_critical_cards_and_no_questions(doc: dict[str, Any]) -> None:
    check_emergency_stands_alone(RULES, doc)


@given(coherence_patient)
def test_no_result_holds_two_referrals_to_one_destination(doc: dict[str, Any]) -> None:
    check_one_referral_per_destination(RULES, doc)


@given(coherence_patient)
def test_a_compound_plan_is_recommended_only_with_back_pain_no_and_the_gate_met(doc: dict[str, Any]) -> None:
    check_compound_plan_only_when_gate_met(RULES, doc)


@given(coherence_patient)
def test_an_unanswered_urgency_raising_question_is_asked_and_urgency_is_not_none(doc: dict[str, Any]) -> None:
    check_urgency_raising_questions_are_asked(RULES, doc)


@given(coherence_patient)
def test_no_card_says_source_says_this_rule_fires_or_policy(doc: dict[str, Any]) -> None:
    check_card_texts_speak_plainly(RULES, doc)


@given(coherence_patient)
def test_conflicts_are_listed_exactly_when_the_documented_contradictions_hold(doc: dict[str, Any]) -> None:
    check_conflicts_exactly_when_documented(RULES, doc)


# ------------------------------------------------------------------ 8: invalid documents


def assert_patient_data_error(doc: Any, inside: str | None = None) -> cdss.PatientDataError:
    with pytest.raises(cdss.PatientDataError) as info:  # any other exception fails the test
        RULES.evaluate(doc)
    path = info.value.path
    assert isinstance(path, str) and path.startswith("$"), path
    if inside is not None:
        assert path == inside or path.startswith((inside + ".", inside + "[")), (
            f"error names {path!r}, the mistake is at {inside!r}")
    return info.value


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_document_with_one_mistake_raises_patient_data_error_naming_it(mutation: str) -> None:
    """One invariant, split by kind of mistake so each kind gets its share (>= 1,000 in all)."""

    @settings(max_examples=max(100, settings.default.max_examples // 5))
    @given(near_valid_patients((mutation,)))
    def run(case: NearValid) -> None:
        assert_patient_data_error(case.doc, case.path)

    run()


@given(invalid_values(json_only=False))
def test_arbitrary_invalid_values_raise_patient_data_error_with_a_json_path(value: Any) -> None:
    assert_patient_data_error(value)


def _cli() -> Any:
    """The command line `cdss evaluate -` from cdss/cli.py (skipped, with the reason, while it is missing).

    The click command is `cdss.cli.cli` (`cdss.cli.main` is the console entry point that
    calls it); whichever of the two is a click command is used.
    """
    import click
    from click.testing import CliRunner

    import cdss.cli as module
    command = next((c for c in (getattr(module, "main", None), getattr(module, "cli", None))
                    if isinstance(c, click.Command)), None)
    assert command is not None, "cdss.cli has no click command (main or cli)"
    return CliRunner(), command


def _cli_exit(runner: Any, main: Any, text: str) -> Any:
    return runner.invoke(main, ["evaluate", "-"], input=text, catch_exceptions=False)


def test_cli_exits_1_on_invalid_documents() -> None:
    runner, main = _cli()

    @given(st.one_of(near_valid_patients().map(lambda c: c.doc), invalid_values(json_only=True)))
    def run(value: Any) -> None:
        result = _cli_exit(runner, main, json.dumps(value))
        assert result.exit_code == 1, (result.exit_code, result.output[-500:])
        assert "$" in result.output, result.output[-500:]

    run()


def test_cli_exits_0_on_a_valid_document() -> None:
    runner, main = _cli()
    result = _cli_exit(runner, main, json.dumps({"red_flags": {"significant_leg_weakness": True}}))
    assert result.exit_code == 0, result.output[-500:]


@pytest.mark.parametrize("text", [
    "", "{", "[]", "null", '{"back_pain": {"present": NaN}}', '{"exercise": {"weeks_consistent": Infinity}}',
    '{"back_pain": {"present": true}, "back_pain": {"present": false}}', "\ufeff{}x",
    '{"exercise": {"weeks_consistent": ' + "9" * 5000 + "}}",
], ids=["empty", "truncated", "array", "null", "nan", "infinity", "duplicate-key", "trailing-garbage", "5000-digit-int"])
def test_cli_exits_1_on_malformed_or_hostile_json(text: str) -> None:
    runner, main = _cli()
    result = _cli_exit(runner, main, text)
    assert result.exit_code == 1, (result.exit_code, result.output[-500:])


def test_urgency_order_matches_the_contract() -> None:
    assert URGENCY_ORDER == ("none", "self-care", "see-professional", "emergency")
