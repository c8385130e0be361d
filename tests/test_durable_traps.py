"""Regression tests for each durable-rules 2.0.28 trap listed in DEPENDENCY-FACTS.md.

Several of these traps segfault the interpreter, so the dangerous ones run in a child
process: a crash there fails the test instead of killing the whole test run.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import cdss
from cdss.compiler import compile_rules
from cdss.engine import DurableRuleset
from tests.helpers import patient, rules_body, write_rule_set

ROOT = Path(__file__).resolve().parent.parent


def run_child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_a_patient_matching_no_rule_is_handled_and_its_state_deleted(basic_rules: cdss.RuleSet) -> None:
    """Trap: an unhandled fact, then delete_state, segfaults. The catch-all rule makes every fact handled."""
    child = run_child("""
        import cdss
        rules = cdss.load_rules("tests/fixtures/basic")
        doc = {"red_flags": {"significant_leg_weakness": False}, "exercise": {"stage": "compound"}}
        for _ in range(3):
            result = rules.evaluate(doc)
        assert result.cards == [], result.cards
        print("survived")
    """)
    assert child.returncode == 0, child.stderr
    assert "survived" in child.stdout


def test_more_than_1024_patients_do_not_exhaust_sessions(basic_rules: cdss.RuleSet) -> None:
    """Trap: more than 1,024 live session ids raise MemoryError. Every evaluation deletes its state."""
    for weeks in range(1500):
        basic_rules.evaluate(patient(exercise={"weeks_consistent": weeks % 521}))


def test_compiled_rules_avoid_rejected_and_misbehaving_operators(basic_rules: cdss.RuleSet) -> None:
    """Traps: $not is rejected, $nex on dotted paths re-fires forever, $iall over [] is false,
    comparisons must be written {"$gte": {field: v}}. The compiler emits none of the bad forms."""
    definition = json.dumps(compile_rules(basic_rules.rules, dict(basic_rules.parameter_values)))
    for forbidden in ('"$not"', '"$nex"', '"$iall"', '"$iany"', "."):
        if forbidden == ".":
            assert all("." not in key for key in _keys(json.loads(definition))), "dotted field paths reach the engine"
        else:
            assert forbidden not in definition
    assert '{"$gte": {"exercise__weeks_consistent": 6}}' in definition


def _keys(node: object) -> list[str]:
    if isinstance(node, dict):
        return [k for k in node] + [k for v in node.values() for k in _keys(v)]
    if isinstance(node, list):
        return [k for v in node for k in _keys(v)]
    return []


def test_all_matching_rules_fire_not_only_the_first(tmp_path: Path) -> None:
    """Trap: `post` (events) is consumed by the first matching rule. Facts let every rule fire."""
    rules = cdss.load_rules(write_rule_set(tmp_path, rules_body({
        "one": "{field: back_pain.present, is: true}",
        "two": "{field: back_pain.present, is: true}",
        "three": "{field: back_pain.present, is: known}",
    })))
    fired = {card["rule"] for card in rules.evaluate({"back_pain": {"present": True}}).cards}
    assert fired == {"one", "two", "three"}


def test_an_any_with_two_true_branches_yields_one_card(tmp_path: Path) -> None:
    """Trap: an $or with two true branches fires its rule twice."""
    rules = cdss.load_rules(write_rule_set(tmp_path, rules_body({
        "either": "{any: [{field: back_pain.present, is: true}, {field: symptoms.deep_buttock_ache, is: true}]}",
    })))
    engine = DurableRuleset(compile_rules(rules.rules, {}), "raw")
    from cdss.patient import flatten

    fact, _ = flatten({"back_pain": {"present": True}, "symptoms": {"deep_buttock_ache": True}})
    assert engine.fire(fact) == {"either"}
    cards = rules.evaluate({"back_pain": {"present": True}, "symptoms": {"deep_buttock_ache": True}}).cards
    assert [c["rule"] for c in cards] == ["either"]


def test_registration_errors_become_engine_errors_without_raw_codes() -> None:
    """Trap: registration errors arrive as 'Could not create ruleset, error code: N'."""
    with pytest.raises(cdss.EngineError) as info:
        DurableRuleset({"bad": {"all": [{"m": {"$not": {"x": 1}}}]}}, "bad")
    assert "please report" in str(info.value)


def test_no_timer_threads_are_started() -> None:
    """Trap: durable's Host starts two timer threads that dispatch into the ruleset; we never use Host."""
    before = threading.active_count()
    rules = cdss.load_rules("tests/fixtures/basic")
    rules.evaluate({})
    assert threading.active_count() == before


def test_one_ruleset_used_from_four_threads_gives_correct_results(basic_rules: cdss.RuleSet) -> None:
    """Trap: a Host used from several threads at once segfaults. Calls are serialised per ruleset."""
    child = run_child("""
        import threading, cdss
        rules = cdss.load_rules("tests/fixtures/basic")
        docs = [{"red_flags": {"significant_leg_weakness": flag}, "exercise": {"weeks_consistent": w}, "back_pain": {"present": True}}
                for flag in (True, False, None) for w in range(0, 12)]
        expected = [rules.evaluate(d).to_json() for d in docs]
        wrong = []
        def work():
            for _ in range(40):
                for d, e in zip(docs, expected):
                    if rules.evaluate(d).to_json() != e:
                        wrong.append(d)
        threads = [threading.Thread(target=work) for _ in range(4)]
        [t.start() for t in threads]; [t.join() for t in threads]
        print("wrong", len(wrong))
    """)
    assert child.returncode == 0, child.stderr
    assert "wrong 0" in child.stdout


def test_closing_a_ruleset_releases_it(basic_rules: cdss.RuleSet) -> None:
    engine = DurableRuleset(compile_rules(basic_rules.rules, dict(basic_rules.parameter_values)), "close")
    engine.close()
    engine.close()  # idempotent


# ---------------------------------------------------------------- batches: many facts in one session (issue 15)


def _raw_session(rules: cdss.RuleSet) -> tuple[object, object]:
    import durable_rules_engine

    definition = compile_rules(rules.rules, dict(rules.parameter_values))
    return durable_rules_engine, durable_rules_engine.create_ruleset("trap-batch", json.dumps(definition))


def _fired(engine: object, handle: object, message: str) -> tuple[int, set[str]]:
    code, state = engine.assert_fact(handle, message)  # type: ignore[attr-defined]
    fired: set[str] = set()
    if code != 0:
        return code, fired
    result = engine.start_action_for_state(handle, state)  # type: ignore[attr-defined]
    action = result[1] if result else None
    while action:
        fired.update(json.loads(action))
        action = engine.complete_and_start_action(handle, state)  # type: ignore[attr-defined]
    return code, fired


def test_trap_a_second_fact_with_the_same_id_in_a_session_is_dropped(basic_rules: cdss.RuleSet) -> None:
    """Trap: in one session, a second fact with an id already present returns code 2 and fires nothing."""
    engine, handle = _raw_session(basic_rules)
    try:
        first = '{"kind": "patient", "id": "same", "sid": "s1", "back_pain__present": "true"}'
        second = '{"kind": "patient", "id": "same", "sid": "s1", "back_pain__present": "false"}'
        assert _fired(engine, handle, first)[0] == 0
        code, fired = _fired(engine, handle, second)
        assert code == 2 and fired == set()  # a different patient, silently not evaluated
        engine.delete_state(handle, "s1")  # type: ignore[attr-defined]
    finally:
        engine.delete_ruleset(handle)  # type: ignore[attr-defined]


def test_trap_facts_without_an_id_merge_when_identical(basic_rules: cdss.RuleSet) -> None:
    """Trap: a fact without an id gets one derived from its content, so two identical patients in one
    session are one fact: the second is dropped (code 2). evaluate_many numbers facts by position."""
    engine, handle = _raw_session(basic_rules)
    try:
        fact = '{"kind": "patient", "sid": "s2", "back_pain__present": "true"}'
        assert _fired(engine, handle, fact)[0] == 0
        assert _fired(engine, handle, fact)[0] == 2
        engine.delete_state(handle, "s2")  # type: ignore[attr-defined]
    finally:
        engine.delete_ruleset(handle)  # type: ignore[attr-defined]


def test_identical_patients_in_one_batch_each_get_their_result(basic_rules: cdss.RuleSet) -> None:
    """The fix for both traps: five identical documents in one session give five full results."""
    doc = patient(back_pain={"present": True}, red_flags={"significant_leg_weakness": True})
    expected = basic_rules.evaluate(doc).to_json()
    results = list(basic_rules.evaluate_many([doc] * 5, chunk=5))
    assert [r.to_json() for r in results] == [expected] * 5
    assert all(r.cards for r in results)


def test_more_than_1024_batches_do_not_exhaust_sessions(basic_rules: cdss.RuleSet) -> None:
    """Trap: the 1,025th live session raises MemoryError. Every batch deletes its one session."""
    docs = [patient(exercise={"weeks_consistent": weeks % 521}) for weeks in range(3000)]
    assert sum(1 for _ in basic_rules.evaluate_many(docs, chunk=2)) == 3000


def test_a_batch_where_every_patient_fires_the_most_rules_allowed(tmp_path: Path) -> None:
    """255 rules (the engine limit the loader enforces) all firing for each of 64 patients in one session:
    actions are drained after each fact, so nothing accumulates (in a child: a crash fails the test)."""
    rules_dir = write_rule_set(tmp_path, rules_body({f"r{i:03d}": "{field: back_pain.present, is: true}"
                                                     for i in range(255)}))
    child = run_child(f"""
        import cdss
        rules = cdss.load_rules({str(rules_dir)!r})
        docs = [{{"back_pain": {{"present": True}}, "exercise": {{"weeks_consistent": i}}}} for i in range(128)]
        results = list(rules.evaluate_many(docs, chunk=64))
        assert all(len(r.cards) == 255 for r in results), [len(r.cards) for r in results]
        assert [r.to_json() for r in results] == [rules.evaluate(d).to_json() for d in docs]
        print("survived")
    """)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "survived" in child.stdout
