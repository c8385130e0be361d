"""The safety invariants as plain check functions.

Each `check_*` takes a RuleSet and a patient document, evaluates, and raises AssertionError
(with a message naming the invariant) when the invariant is broken. A check whose
precondition does not hold for the document returns without asserting, so `violations()`
can run every check on any document. tests/test_safety_properties.py runs them on the
bundled rules over generated documents; tests/test_mutation.py runs exactly the same
functions on deliberately broken copies of the rules and expects them to fail.

The expectations are written from CONTRACTS.md and docs/RULE-LANGUAGE.md, not from the
implementation: urgency order, indicators and which categories the screening gate hides.
"""

from __future__ import annotations

from typing import Any, Callable

import cdss
from cdss.fields import patient_fields
from tests.strategies import ABSENT, get, put, red_flags, tristate_paths

URGENCY_ORDER = ("none", "self-care", "see-professional", "emergency")
INDICATORS = ("critical", "warning", "info")
GATED_CATEGORIES = ("exercise", "progression")  # their cards are dropped unless screening is negative
SUMMARY_LIMIT = 140  # CDS Hooks: summary < 140 characters
MORE_WEEKS = (1, 2, 3, 6, 52, 520)
NEGATIVE_PLAN_STATUSES = ("recommended", "pending-answers", "not-indicated")  # screening negative (issue 17)


def rank(urgency: str) -> int:
    return URGENCY_ORDER.index(urgency)


def result_of(rules: cdss.RuleSet, doc: Any, *, trace: bool = False) -> dict[str, Any]:
    return rules.evaluate(doc, trace=trace).to_dict()


def _card_categories(rules: cdss.RuleSet, result: dict[str, Any]) -> list[tuple[str, str]]:
    return [(card["rule"], rules.rule(card["rule"]).category) for card in result["cards"]]


# ------------------------------------------------------------------ 1-3: red-flag screening


def check_red_flag_means_emergency(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """Any red flag answered yes: emergency, screening positive, plan withheld, first card critical."""
    flags = red_flags(doc)
    if True not in flags.values():
        return
    result = result_of(rules, doc)
    yes = [path for path, value in flags.items() if value is True]
    where = f"red flag(s) {yes} answered yes"
    assert result["urgency"] == "emergency", f"{where} but urgency is {result['urgency']!r}"
    assert result["red_flag_screening"] == "positive", f"{where} but screening is {result['red_flag_screening']!r}"
    plan = result["plan"]
    assert plan["status"] == "withheld", f"{where} but plan status is {plan['status']!r}"
    assert plan["exercises"] == [], f"{where} but exercises are listed: {[e['id'] for e in plan['exercises']]}"
    assert result["cards"], f"{where} but there is no card at all"
    first = result["cards"][0]
    assert first["indicator"] == "critical", f"{where} but the first card is {first['indicator']!r} ({first['rule']})"
    gated = [c for c in _card_categories(rules, result) if c[1] in GATED_CATEGORIES]
    assert gated == [], f"{where} but exercise/progression cards are shown: {gated}"


def check_unknown_red_flag_is_never_all_clear(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """No red flag yes, at least one unknown: incomplete, plan pending, each unknown flag asked about.

    The strongest statement the bundled rules support: urgency is exactly see-professional
    (a screening rule asks for it; nothing may ask for emergency without a red flag), so the
    result is never none/self-care, and each unknown flag has a warning card of a screening
    rule that fired because that very flag is unknown.
    """
    flags = red_flags(doc)
    unknown = [path for path, value in flags.items() if value is None]
    if True in flags.values() or not unknown:
        return
    result = result_of(rules, doc, trace=True)
    where = f"no red flag yes and {unknown} unknown"
    assert result["red_flag_screening"] == "incomplete", f"{where} but screening is {result['red_flag_screening']!r}"
    plan = result["plan"]
    assert plan["status"] == "pending-screening", f"{where} but plan status is {plan['status']!r}"
    assert plan["exercises"] == [], f"{where} but exercises are listed: {[e['id'] for e in plan['exercises']]}"
    for path in unknown:
        assert path in result["missing"], f"{where} but {path} is not listed in missing {result['missing']}"
    assert result["urgency"] == "see-professional", (
        f"{where}: expected urgency see-professional (no all-clear, no emergency), got {result['urgency']!r}")
    gated = [c for c in _card_categories(rules, result) if c[1] in GATED_CATEGORIES]
    assert gated == [], f"{where} but exercise/progression cards are shown: {gated}"
    carded = {card["rule"]: card for card in result["cards"]}
    for path in unknown:
        asking = [step["rule"] for step in result["trace"]
                  if step["fired"] and step["rule"] in carded
                  and rules.rule(step["rule"]).category == "screening"
                  and carded[step["rule"]]["indicator"] in ("warning", "critical")
                  and any(c["field"] == path and c["op"] == "is" and c["value"] == "unknown" and c["result"]
                          for c in step["conditions"])]
        assert asking, f"{where} but no screening card asks about {path}"


def check_all_clear_screening_never_emergency(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """All three red flags answered no: no critical card, urgency never emergency, plan recommended."""
    flags = red_flags(doc)
    if any(value is not False for value in flags.values()):
        return
    result = result_of(rules, doc)
    critical = [c["rule"] for c in result["cards"] if c["indicator"] == "critical"]
    assert critical == [], f"all red flags answered no but critical card(s) {critical}"
    assert result["urgency"] != "emergency", "all red flags answered no but urgency is emergency"
    assert result["red_flag_screening"] == "negative", f"all red flags no but screening {result['red_flag_screening']!r}"
    assert result["plan"]["status"] in NEGATIVE_PLAN_STATUSES, f"all red flags no but plan {result['plan']['status']!r}"


# ------------------------------------------------------------------ laterality (G-SIGN-3)

SIDE_FIELDS = {  # CONTRACTS.md: standing on the left leg with a hip drop means the LEFT side is weak
    "left": "observations.hip_drop_in_single_leg_stance.standing_on_left",
    "right": "observations.hip_drop_in_single_leg_stance.standing_on_right",
}


def check_weak_side_named_only_when_observed(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """A side is named exactly for the legs a hip drop was observed standing on, and cards name that side only."""
    result = result_of(rules, doc)
    named = {f["side"] for f in result["findings"] if "side" in f}
    observed = {side for side, path in SIDE_FIELDS.items() if get(doc, path) is True}
    assert named == observed, f"findings name side(s) {sorted(named)}, hip drop observed standing on {sorted(observed)}"
    sided_rules = {f["rule"]: f["side"] for f in result["findings"] if "side" in f}
    for card in result["cards"]:
        side = sided_rules.get(card["rule"])
        if side is None:
            continue
        other = "right" if side == "left" else "left"
        summary = card["summary"].lower()
        assert side in summary and other not in summary, f"{card['rule']}: side {side} but summary {card['summary']!r}"


# ------------------------------------------------------------------ 4: monotonicity


def check_yes_never_lowers_urgency(rules: cdss.RuleSet, doc: dict[str, Any], paths: tuple[str, ...] | None = None) -> None:
    """Turning any yes/no answer from no or unknown to yes never lowers urgency."""
    before = rank(result_of(rules, doc)["urgency"])
    for path in paths or tristate_paths():
        if get(doc, path) is True:
            continue
        turned = put(doc, path, True)
        after = rank(result_of(rules, turned)["urgency"])
        assert after >= before, (
            f"turning {path} from {get(doc, path) if get(doc, path) is not ABSENT else 'absent'} to true lowers "
            f"urgency from {URGENCY_ORDER[before]} to {URGENCY_ORDER[after]}")


def check_more_weeks_never_lower_urgency(rules: cdss.RuleSet, doc: dict[str, Any], more: tuple[int, ...] = MORE_WEEKS) -> None:
    """With the pain trend unchanged or worsening, more weeks of consistent exercise never lower urgency."""
    weeks = get(doc, "exercise.weeks_consistent")
    if get(doc, "back_pain.trend") not in ("unchanged", "worsening") or not isinstance(weeks, int):
        return
    before = rank(result_of(rules, doc)["urgency"])
    for extra in more:
        if weeks + extra > 520:
            break
        after = rank(result_of(rules, put(doc, "exercise.weeks_consistent", weeks + extra))["urgency"])
        assert after >= before, (f"{weeks} -> {weeks + extra} weeks lowers urgency from {URGENCY_ORDER[before]} "
                                 f"to {URGENCY_ORDER[after]}")


# ------------------------------------------------------------------ 7: cards, provenance, trace


def check_cards_are_sourced_and_agree_with_trace(rules: cdss.RuleSet, doc: dict[str, Any], source_text: str) -> None:
    """Every card quotes the source verbatim, fits CDS Hooks, and the trace explains exactly the cards."""
    result = result_of(rules, doc, trace=True)
    rule_ids = {rule.id for rule in rules.rules}
    trace_ids = [step["rule"] for step in result["trace"]]
    assert sorted(trace_ids) == sorted(rule_ids), "the trace does not list every rule exactly once"
    fired = {step["rule"] for step in result["trace"] if step["fired"]}
    assert fired <= rule_ids, f"fired rule ids not in the rule set: {sorted(fired - rule_ids)}"
    for card in result["cards"]:
        rule = card["rule"]
        assert rule in fired, f"card of rule {rule} which did not fire"
        assert card["indicator"] in INDICATORS, f"{rule}: invalid indicator {card['indicator']!r}"
        assert card["indicator"] == rules.rule(rule).indicator, f"{rule}: card indicator differs from the rule's"
        assert len(card["summary"]) < SUMMARY_LIMIT, f"{rule}: summary has {len(card['summary'])} characters"
        assert card["summary"].strip(), f"{rule}: empty summary"
        source = card["source"]
        assert source.get("label"), f"{rule}: card without source.label"
        assert source.get("quote") and source["quote"] in source_text, f"{rule}: quote not found in the source: {source.get('quote')!r}"
    negative = result["red_flag_screening"] == "negative"
    suppressed = {step["rule"]: step["suppressed_by"] for step in result["trace"] if step.get("suppressed_by")}
    tier = {step["rule"]: step["stands_alone"] for step in result["trace"] if step.get("stands_alone")}
    for rule_id, by in suppressed.items():  # a rule gives way only to a fired rule that supersedes it, or to a
        # fired rule of the result's urgency when the rule set declares that urgency stands alone
        assert rule_id in fired and by in fired, (rule_id, by)
        if rule_id in tier:
            assert tier[rule_id] == result["urgency"] == rules.rule(by).urgency, (rule_id, by, tier[rule_id])
            assert result["urgency"] in rules.loaded.stands_alone, (rule_id, by)
            assert rank(rules.rule(rule_id).urgency) < rank(result["urgency"]), (rule_id, by)
        else:
            assert rule_id in rules.rule(by).supersedes, (rule_id, by)
    expected = {rid for rid in fired if "card" in rules.rule(rid).then and rid not in suppressed
                and (negative or rules.rule(rid).category not in GATED_CATEGORIES)}
    shown = [card["rule"] for card in result["cards"]]
    assert len(shown) == len(set(shown)), f"duplicate cards: {shown}"
    assert set(shown) == expected, (f"cards {sorted(shown)} do not match the fired rules with cards {sorted(expected)} "
                                    f"(plan {result['plan']['status']})")
    order = [(INDICATORS.index(rules.rule(r).indicator), -rules.rule(r).priority, r) for r in shown]
    assert order == sorted(order), f"cards not ordered critical > warning > info, priority, id: {shown}"
    top = max((rank(rules.rule(r).urgency) for r in fired), default=0)
    if any(q["could_change"] == "urgency" for q in result["questions"]):
        top = max(top, rank("self-care"))  # an open question that could raise urgency: never none
    assert result["urgency"] == URGENCY_ORDER[top], (
        f"urgency {result['urgency']!r} is not the highest urgency of the fired rules ({URGENCY_ORDER[top]!r})")
    finding_rules = {f["rule"] for f in result["findings"]}
    assert finding_rules == {r for r in fired if "finding" in rules.rule(r).then}, "findings do not match the fired rules"


# ------------------------------------------------------------------ 6: determinism


def check_deterministic(rules: cdss.RuleSet, fresh: cdss.RuleSet, doc: dict[str, Any], others: list[dict[str, Any]]) -> None:
    """Same bytes alone, after and between other patients, and from a freshly loaded rule set."""
    first = rules.evaluate(doc).to_json()
    for other in others:
        rules.evaluate(other)
    assert rules.evaluate(doc).to_json() == first, "result changed after evaluating other patients"
    for other in reversed(others):
        rules.evaluate(other)
        assert rules.evaluate(doc).to_json() == first, "result changed when interleaved with other patients"
    assert fresh.evaluate(doc).to_json() == first, "a freshly loaded rule set gives different bytes"


# ------------------------------------------------------------------ issue 17: clinical coherence

PLAIN_WORDS_BANNED = ("source says", "this rule", "fires", "policy")  # issue 17: words for people
QUESTION_FIELDS = ("red_flags.numbness_or_tingling_radiating_down_leg", "red_flags.significant_leg_weakness",
                   "red_flags.sudden_bladder_or_bowel_control_loss", "back_pain.present", "back_pain.trend",
                   "exercise.stage", "exercise.weeks_consistent")
QUESTION_VALUES: dict[str, tuple[Any, ...]] = {
    "back_pain.trend": ("improving", "unchanged", "worsening"), "exercise.stage": ("none", "activation", "compound"),
    "exercise.weeks_consistent": (0, 1, 2, 3, 4, 5, 6, 7, 8, 12, 13, 52)}


def documented_contradictions(doc: dict[str, Any]) -> list[frozenset[str]]:
    """The contradictions SAFETY.md documents, written here from the documentation, not from ruleset.yaml."""
    present, trend = get(doc, "back_pain.present"), get(doc, "back_pain.trend")
    standing = get(doc, "back_pain.worse_with_prolonged_standing_or_walking")
    stage, weeks = get(doc, "exercise.stage"), get(doc, "exercise.weeks_consistent")
    out = []
    if present is False and trend in ("unchanged", "worsening"):
        out.append(frozenset({"back_pain.present", "back_pain.trend"}))
    if present is False and standing is True:
        out.append(frozenset({"back_pain.present", "back_pain.worse_with_prolonged_standing_or_walking"}))
    if stage == "none" and isinstance(weeks, int) and weeks > 0:
        out.append(frozenset({"exercise.stage", "exercise.weeks_consistent"}))
    return out


def _referrals(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [card for card in result["cards"] if "referral" in card]


def check_emergency_carries_one_referral(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """An emergency result holds exactly one referral, immediate, and no non-emergency referral or escalation card."""
    result = result_of(rules, doc)
    if result["urgency"] != "emergency":
        return
    referrals = _referrals(result)
    assert len(referrals) == 1, f"emergency with {len(referrals)} referrals: {[c['rule'] for c in referrals]}"
    assert referrals[0]["referral"]["timeframe"] == "immediately", f"emergency referral is {referrals[0]['referral']}"
    lesser = [c["rule"] for c in result["cards"] if c["indicator"] != "critical"
              and ("referral" in rules.rule(c["rule"]).then or rules.rule(c["rule"]).category == "escalation")]
    assert lesser == [], f"emergency result also shows lower referral/escalation cards {lesser}"


def check_emergency_stands_alone(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """An emergency result shows only critical emergency rule cards and asks no questions; its CDS Hooks
    response adds only the review-status and scope cards, after them."""
    assessment = rules.evaluate(doc)
    result = assessment.to_dict()
    if result["urgency"] != "emergency":
        return
    lesser = [c["rule"] for c in result["cards"]
              if c["indicator"] != "critical" or rules.rule(c["rule"]).urgency != "emergency"]
    assert lesser == [], f"emergency result also shows lower cards {lesser}"
    assert result["questions"] == [], f"emergency result asks {[q['field'] for q in result['questions']]}"
    hooks = assessment.to_cds_hooks()["cards"]
    kinds = [c["extension"]["invalid.cdss"].get("kind", "rule") for c in hooks]
    rule_kinds = kinds[:len(result["cards"])]
    assert rule_kinds == ["rule"] * len(result["cards"]) and set(kinds[len(rule_kinds):]) <= {"review", "scope"}, (
        f"emergency CDS Hooks cards are {kinds}")


def check_one_referral_per_destination(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """No two referrals share a destination, and a review is never shown next to a referral (one escalation card)."""
    result = result_of(rules, doc)
    seen: dict[str, str] = {}
    for card in _referrals(result):
        for to in card["referral"]["to"]:
            assert to not in seen, f"two referrals to {to}: {seen[to]} and {card['rule']}"
            seen[to] = card["rule"]
    escalation = [c["rule"] for c in result["cards"] if rules.rule(c["rule"]).category == "escalation"]
    assert len(escalation) <= 1, f"review and referral shown together: {escalation}"


def check_compound_plan_only_when_gate_met(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """Compound phase recommended only with back pain answered no and the gate met; pain on compound lifts steps back
    to activation exercises with their dose; a recommended plan always says what to do."""
    result = result_of(rules, doc)
    plan = result["plan"]
    if plan["status"] == "recommended":
        assert plan["exercises"] or plan["notes"], "plan recommended but says nothing to do"
    if plan["status"] == "recommended" and plan["phase"] == "compound":
        weeks = get(doc, "exercise.weeks_consistent")
        gate = result["parameters"]["progression_min_weeks_activation"]
        assert get(doc, "back_pain.present") is False, "compound plan recommended without back pain answered no"
        assert get(doc, "exercise.stage") in ("activation", "compound"), "compound plan without activation work"
        assert isinstance(weeks, int) and weeks >= gate, f"compound plan recommended at {weeks} weeks (gate {gate})"
    conflicted = {f for c in documented_contradictions(doc) for f in c}
    if (result["red_flag_screening"] == "negative" and get(doc, "exercise.stage") == "compound"
            and get(doc, "back_pain.present") is True and not conflicted & {"exercise.stage", "back_pain.present"}):
        assert plan["phase"] == "activation" and plan["exercises"], (
            f"back pain on compound lifts but the plan is {plan['phase']} with {len(plan['exercises'])} exercises")
        assert all(e["sets"] and e["reps"] for e in plan["exercises"])


def check_urgency_raising_questions_are_asked(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """An unanswered question whose answer could raise urgency is in `questions` (could_change urgency), urgency not none.

    The oracle answers each unknown question field with each value (skipping answers that would contradict
    another answer, which are read as unknown) and compares urgency; it knows nothing of the rules."""
    result = result_of(rules, doc)
    before = rank(result["urgency"])
    asked = {q["field"]: q["could_change"] for q in result["questions"]}
    for path in QUESTION_FIELDS:
        if get(doc, path) not in (None, ABSENT):
            continue
        for value in QUESTION_VALUES.get(path, (True, False)):
            answered = put(doc, path, value)
            if len(documented_contradictions(answered)) > len(documented_contradictions(doc)):
                continue
            after = rank(result_of(rules, answered)["urgency"])
            if after > before:
                assert asked.get(path) == "urgency", (
                    f"{path}={value!r} would raise urgency {URGENCY_ORDER[before]} -> {URGENCY_ORDER[after]} but "
                    f"questions are {asked}")
                assert result["urgency"] != "none", f"question on {path} open but urgency is none"
                break


def check_card_texts_speak_plainly(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """No card (result or CDS Hooks) says "source says", "this rule", "fires" or "policy", or shows a field path;
    CDS Hooks cards come critical -> warning -> info."""
    assessment = rules.evaluate(doc)
    cards = [*assessment.to_dict()["cards"], *assessment.to_cds_hooks()["cards"]]
    paths = tuple(patient_fields())
    for card in cards:
        text = f"{card['summary']}\n{card.get('detail', '')}\n{card.get('referral', {}).get('reason', '')}".lower()
        for word in PLAIN_WORDS_BANNED:
            assert word not in text, f"card {card.get('rule', card['source'])} says {word!r}"
        shown = [p for p in paths if p in text]
        assert shown == [], f"card {card.get('rule', card['source'])} shows field paths {shown}"
    indicators = [INDICATORS.index(c["indicator"]) for c in assessment.to_cds_hooks()["cards"]]
    assert indicators == sorted(indicators), f"CDS Hooks cards not critical -> warning -> info: {indicators}"


def check_conflicts_exactly_when_documented(rules: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """`conflicts` lists exactly the documented contradictions that hold, and their fields count as missing."""
    result = result_of(rules, doc)
    found = sorted(sorted(c["fields"]) for c in result["conflicts"])
    expected = sorted(sorted(c) for c in documented_contradictions(doc))
    assert found == expected, f"conflicts {found}, documented contradictions {expected}"


# ------------------------------------------------------------------ all per-document checks

PER_DOCUMENT_CHECKS: dict[str, Callable[..., None]] = {
    "red flag means emergency": check_red_flag_means_emergency,
    "unknown red flag is never all-clear": check_unknown_red_flag_is_never_all_clear,
    "all-clear screening is never emergency": check_all_clear_screening_never_emergency,
    "weak side named only when observed": check_weak_side_named_only_when_observed,
    "yes never lowers urgency": check_yes_never_lowers_urgency,
    "more weeks never lower urgency": check_more_weeks_never_lower_urgency,
    "emergency carries one referral": check_emergency_carries_one_referral,
    "emergency stands alone": check_emergency_stands_alone,
    "one referral per destination": check_one_referral_per_destination,
    "compound plan only when the gate is met": check_compound_plan_only_when_gate_met,
    "card texts speak plainly": check_card_texts_speak_plainly,
    "conflicts exactly when documented": check_conflicts_exactly_when_documented,
    "urgency-raising questions are asked": check_urgency_raising_questions_are_asked,
}


def violations(rules: cdss.RuleSet, doc: dict[str, Any], source_text: str | None = None, *,
               first_only: bool = False) -> list[str]:
    """Every per-document invariant this document breaks under these rules ([] when all hold).

    With first_only, stop at the first broken invariant (cheap checks run first)."""
    broken = []
    checks = dict(PER_DOCUMENT_CHECKS)
    if source_text is not None:
        checks["cards are sourced and agree with the trace"] = (
            lambda r, d: check_cards_are_sourced_and_agree_with_trace(r, d, source_text))
    for name, check in checks.items():
        try:
            check(rules, doc)
        except AssertionError as error:
            broken.append(f"{name}: {error}")
            if first_only:
                break
    return broken
