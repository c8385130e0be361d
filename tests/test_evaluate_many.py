"""`RuleSet.evaluate_many`: many patients, one durable-rules session per chunk, the same results as `evaluate`."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cdss
from tests.helpers import patient
from tests.strategies import invalid_values, valid_patients

ROOT = Path(__file__).resolve().parent.parent


def one_by_one(rules: cdss.RuleSet, doc: Any, trace: bool = False) -> str:
    """What `evaluate` gives for a document: its JSON, or the error it raises, as text."""
    try:
        return rules.evaluate(doc, trace=trace).to_json()
    except cdss.PatientDataError as error:
        return f"error: {error}"


def as_text(item: cdss.Assessment | cdss.PatientDataError) -> str:
    return f"error: {item}" if isinstance(item, cdss.PatientDataError) else item.to_json()


@given(docs=st.lists(valid_patients() | invalid_values(), max_size=12), chunk=st.integers(1, 5))
def test_each_result_equals_evaluate_byte_for_byte(bundled: cdss.RuleSet, docs: list[Any], chunk: int) -> None:
    """In order, one item per document; valid ones byte-identical, invalid ones the same error, in place."""
    assert [as_text(item) for item in bundled.evaluate_many(docs, chunk=chunk)] == [one_by_one(bundled, d) for d in docs]


@given(docs=st.lists(valid_patients(), min_size=1, max_size=6))
def test_trace_equals_evaluate_with_trace(bundled: cdss.RuleSet, docs: list[Any]) -> None:
    got = [item.to_dict() for item in bundled.evaluate_many(docs, trace=True)]
    assert got == [bundled.evaluate(d, trace=True).to_dict() for d in docs]


def test_errors_stay_in_place_and_the_run_goes_on(bundled: cdss.RuleSet) -> None:
    emergency = patient(red_flags={"significant_leg_weakness": True, "numbness_or_tingling_radiating_down_leg": False,
                                   "sudden_bladder_or_bowel_control_loss": False})
    docs = [{"red_flags": {"significant_leg_weakness": "maybe"}}, emergency, 42, {"no_such_section": {}}, emergency]
    items = list(bundled.evaluate_many(docs, chunk=2))
    assert [type(i).__name__ for i in items] == ["PatientDataError", "Assessment", "PatientDataError",
                                                 "PatientDataError", "Assessment"]
    assert items[1].urgency == items[4].urgency == "emergency"
    assert "$.red_flags.significant_leg_weakness" in str(items[0])


def test_input_is_consumed_one_chunk_at_a_time(bundled: cdss.RuleSet) -> None:
    """An endless input works: results come out before the input ends, so memory stays bounded."""
    pulled = 0

    def endless() -> Any:
        nonlocal pulled
        for weeks in itertools.count():
            pulled += 1
            yield patient(exercise={"weeks_consistent": weeks % 100})

    first = list(itertools.islice(bundled.evaluate_many(endless(), chunk=8), 3))
    assert len(first) == 3 and pulled == 8


def test_empty_input_and_bad_chunk_sizes(bundled: cdss.RuleSet) -> None:
    assert list(bundled.evaluate_many([])) == []
    for chunk in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="chunk"):
            bundled.evaluate_many([{}], chunk=chunk)  # type: ignore[arg-type]


def test_one_document_passed_whole_is_refused_not_iterated(bundled: cdss.RuleSet) -> None:
    """A dict (or text) is iterable: its keys would become 'patients', each an error. Refuse it instead."""
    for wrong in ({"red_flags": {}}, '{"red_flags": {}}', b"{}"):
        with pytest.raises(TypeError, match="iterable of patient documents"):
            bundled.evaluate_many(wrong)  # type: ignore[arg-type]  # at the call, not at the first item


def test_batches_and_single_evaluations_from_four_threads_agree() -> None:
    """Thread safety as `evaluate`: a batch holds the engine lock for one chunk (in a child: a race would segfault)."""
    code = textwrap.dedent("""
        import threading, cdss
        rules = cdss.load_rules()
        docs = [{"red_flags": {"significant_leg_weakness": flag}, "exercise": {"weeks_consistent": w},
                 "back_pain": {"present": True}} for flag in (True, False, None) for w in range(0, 12)]
        expected = [rules.evaluate(d).to_json() for d in docs]
        wrong = []
        def batches():
            for _ in range(30):
                if [a.to_json() for a in rules.evaluate_many(docs, chunk=7)] != expected:
                    wrong.append("batch")
        def singles():
            for _ in range(30):
                wrong.extend(d for d, e in zip(docs, expected) if rules.evaluate(d).to_json() != e)
        threads = [threading.Thread(target=f) for f in (batches, batches, singles, singles)]
        [t.start() for t in threads]; [t.join() for t in threads]
        print("wrong", len(wrong))
    """)
    child = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stderr
    assert "wrong 0" in child.stdout


CDSS = Path(sys.executable).with_name("cdss")


def test_jsonl_file_batches_equal_one_evaluation_per_line(tmp_path: Path, bundled: cdss.RuleSet) -> None:
    """`cdss evaluate --jsonl FILE` evaluates chunks through evaluate_many: every line as `evaluate` gives it."""
    import json

    docs: list[Any] = [patient(exercise={"weeks_consistent": w}, back_pain={"present": w % 2 == 0}) for w in range(150)]
    docs[7] = {"red_flags": {"significant_leg_weakness": "no"}}
    docs[70] = docs[71] = docs[72] = docs[3]  # identical patients in one chunk
    path = tmp_path / "batch.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    done = subprocess.run([str(CDSS), "evaluate", "--jsonl", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1  # one invalid line
    lines = done.stdout.splitlines()
    assert len(lines) == len(docs)
    for index, (line, doc) in enumerate(zip(lines, docs)):
        if index == 7:
            assert json.loads(line)["error"]["path"] == "$.red_flags.significant_leg_weakness"
        else:
            assert line == bundled.evaluate(doc).to_json()


def test_jsonl_from_a_pipe_answers_each_line_without_waiting_for_a_chunk() -> None:
    """A live feed (a pipe) gets each result at once, not after 64 lines: an emergency must not wait."""
    import json
    import queue
    import threading

    emergency = patient(red_flags={"significant_leg_weakness": True, "numbness_or_tingling_radiating_down_leg": False,
                                   "sudden_bladder_or_bowel_control_loss": False})
    process = subprocess.Popen([str(CDSS), "evaluate", "--jsonl", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdin is not None and process.stdout is not None
    answers: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: answers.put(process.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    try:
        process.stdin.write(json.dumps(emergency).encode() + b"\n")
        process.stdin.flush()
        first = answers.get(timeout=60)  # the pipe stays open: only line-at-a-time can answer
        assert json.loads(first)["urgency"] == "emergency"
    finally:
        process.stdin.close()
        process.wait(timeout=60)
