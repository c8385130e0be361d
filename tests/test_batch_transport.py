"""How `cdss evaluate --jsonl --workers N` moves lines and results between processes (issue 15):
chunks packed into one bytes object, chunk sizes learned from the output, widened pipes. Only
speed may depend on these; the output must not."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from cdss.cli import batch
from cdss.cli.input import MAX_DOCUMENT_BYTES, iter_lines
from tests.conftest import FIXTURES

CDSS = Path(sys.executable).parent / "cdss"
BASIC = str(FIXTURES / "basic")


@given(st.binary(max_size=400), st.sampled_from(["a.jsonl", "-"]), st.integers(min_value=1, max_value=10**6))
def test_pack_then_unpack_gives_back_exactly_the_lines_iter_lines_read(data: bytes, name: str, offset: int) -> None:
    """Whatever bytes a file holds (\\r, \\r\\n, \\x85, no final newline, blank lines), the lines
    the reader produced come back from one packed bytes object unchanged, numbers included."""
    lines = [(name, number + offset, raw) for number, raw in iter_lines(io.BytesIO(data))]
    if not lines:
        return
    packed = batch.pack(lines)
    assert isinstance(packed, tuple) and packed[:2] == (name, 1 + offset)
    assert batch.unpack(packed) == lines


@given(st.lists(st.one_of(st.binary(max_size=30), st.sampled_from([b"", b"\n", b"\r\n", b"x" * 9, b"y" * 10,
                                                                b"z" * 11, b"{}\n" * 3])), max_size=12),
       st.integers(min_value=1, max_value=40), st.booleans())
def test_regular_files_read_in_blocks_give_the_lines_iter_lines_gives(
        pieces: list[bytes], block: int, two_inputs: bool) -> None:
    """The parent reads a regular file in blocks and never looks at a line; what the workers
    unpack must be exactly what the line-by-line reader gives, oversized lines included (the
    cap is lowered to 8 bytes here so that short strings exercise it)."""
    import tempfile
    from unittest import mock

    data = b"".join(pieces)
    with tempfile.TemporaryDirectory() as tmp, mock.patch("cdss.cli.input.MAX_DOCUMENT_BYTES", 8), \
            mock.patch("cdss.cli.batch.MAX_DOCUMENT_BYTES", 8):
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(data)
        names = ["in.jsonl", "again.jsonl"] if two_inputs else ["in.jsonl"]

        def inputs() -> list[tuple[str, object]]:
            return [(name, path.open("rb")) for name in names]

        expected = list(batch.read_lines(inputs()))
        sizer = batch.Sizer()
        sizer.input_bytes = block
        got = [line for work in batch.chunks(inputs(), sizer) for line in batch.unpack(work)]
    assert got == expected


def test_chunks_that_are_not_consecutive_whole_lines_are_sent_as_they_are() -> None:
    problem = batch.unreadable(OSError(5, "Input/output error"))
    for chunk in ([("a", 1, b"{}\n"), ("b", 1, b"{}\n")],   # two inputs
                  [("a", 1, b"{}\n"), ("a", 1, b"{}\n")],   # the same input given twice
                  [("a", 1, b"{}\n"), ("a", 2, None)],      # an oversized line
                  [("a", 1, b"{}\n"), ("a", 2, problem)]):  # an unreadable input
        assert batch.pack(chunk) is chunk
        assert batch.unpack(chunk) is chunk


def test_chunk_size_follows_the_output_bytes_per_line() -> None:
    sizer = batch.Sizer()
    assert sizer.lines == batch.FIRST_CHUNK_LINES
    sizer.learn(batch.Block([(b"x" * 5_000, "self-care", None)] * 10))  # about 5 KB per line: --format json
    assert sizer.lines == batch.BLOCK_BYTES * 10 // (5_001 * 10)
    assert sizer.lines * 5_001 <= batch.BLOCK_BYTES < (sizer.lines + 1) * 5_001
    big = batch.Sizer()
    big.learn(batch.Block([(b"x" * 200_000, "none", None)]))
    assert big.lines == batch.MIN_CHUNK_LINES
    small = batch.Sizer()
    small.learn(batch.Block([(b"{}", "none", None)] * 3))
    assert small.lines == batch.CHUNK_LINES
    blank = batch.Sizer()
    blank.learn(batch.Block([]))  # a chunk of blank lines tells nothing
    assert blank.lines == batch.FIRST_CHUNK_LINES


def test_the_pool_pipes_are_widened_where_the_system_allows_it() -> None:
    import fcntl

    from cdss.cli.pool import PIPE_BYTES, Pool

    pool = Pool(1, lambda: None, lambda message: message)
    try:
        assert pool.wait(pool.submit("hello")) == "hello"
        worker = pool.workers[0]
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        expected = PIPE_BYTES if (limit >= PIPE_BYTES or os.geteuid() == 0) else None
        for fd in (worker.send, worker.receive):
            size = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
            assert size == expected if expected else size >= 4096
    finally:
        pool.kill()


def test_every_kind_of_line_across_many_chunks_matches_one_process(tmp_path: Path) -> None:
    """The real command, --workers 2 against --workers 1, byte for byte: enough lines for many
    chunks of learned size, blank and CRLF lines, bad JSON, non-UTF-8 bytes, an oversized line,
    a second input, the same input twice, and a last line without a newline."""
    good = {"patient_id": "p", "back_pain": {"present": True, "trend": "unchanged"},
            "exercise": {"stage": "activation", "weeks_consistent": 4}}
    lines = []
    for i in range(900):
        kind = i % 9
        if kind == 0:
            lines.append(b"")
        elif kind == 1:
            lines.append(json.dumps({**good, "patient_id": f"crlf-{i}"}).encode() + b"\r")
        elif kind == 2:
            lines.append(b'{"patient_id": "bad", ')
        elif kind == 3:
            lines.append(b'{"patient_id": "\xff"}')
        else:
            lines.append(json.dumps({**good, "patient_id": f"p{i}"}).encode())
    lines[450] = b'{"patient_id": "' + b"x" * (MAX_DOCUMENT_BYTES + 10) + b'"}'
    first = tmp_path / "first.jsonl"
    first.write_bytes(b"\n".join(lines))  # no newline after the last line
    second = tmp_path / "second.jsonl"
    second.write_bytes(b"\n".join(lines[:40]) + b"\n")
    env = dict(os.environ, CDSS_CACHE_DIR=str(tmp_path / "cache"))

    def run(workers: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([str(CDSS), "evaluate", "--jsonl", "--rules", BASIC, "--workers", workers,
                               str(first), str(second), str(first)], capture_output=True, env=env, timeout=300)

    one, two = run("1"), run("2")
    assert one.returncode == two.returncode == 1, two.stderr
    assert two.stdout == one.stdout
    assert two.stderr == one.stderr
    out = [json.loads(line) for line in two.stdout.splitlines()]
    expected = [line for line in lines if line.strip()] + [line for line in lines[:40] if line.strip()] \
        + [line for line in lines if line.strip()]
    assert len(out) == len(expected)
    assert out[0]["patient_id"] == "crlf-1" and out[1]["line"] == 3 and out[2]["line"] == 4
    oversized = [record for record in out if record.get("line") == 451]
    assert len(oversized) == 2 and all("1024 KiB per line" in r["error"]["expected"] for r in oversized)
    assert out[-1].get("patient_id") == "p899"  # the last line, without its newline, still evaluated


def test_outputs_come_back_through_shared_memory_and_big_ones_in_the_message() -> None:
    """A real worker pool: a chunk's output is left in its shared-memory slot (only the counts
    cross the pipe) unless it is larger than a slot; either way the parent gets the same bytes
    as evaluating in this process."""
    import cdss

    rules = cdss.load_rules()
    good = {"patient_id": "p", "back_pain": {"present": True}, "red_flags": {"significant_leg_weakness": True}}
    small = [("in.jsonl", i + 1, json.dumps({**good, "patient_id": f"p{i}"}).encode() + b"\n") for i in range(5)]
    reference = batch.Block(batch.Evaluator(rules, trace=False, fmt="json").evaluate_chunk(small))
    per_line = len(reference.data) // len(small)
    big = [("in.jsonl", i + 1, json.dumps({**good, "patient_id": f"q{i}"}).encode() + b"\n")
           for i in range(batch.SLOT_BYTES // per_line + 20)]
    big_reference = batch.Block(batch.Evaluator(rules, trace=False, fmt="json").evaluate_chunk(big))
    assert len(big_reference.data) > batch.SLOT_BYTES
    slots = batch.Slots(2)
    assert slots.memory is not None  # Linux: fork is available
    pool = batch._pool(2, (rules.loaded, {}, False, "json", False), slots.memory)
    try:
        first, second = slots.take(), slots.take()
        assert slots.take() is None  # every slot is in use
        one = pool.wait(pool.submit((small, first)))
        two = pool.wait(pool.submit((big, second)))
    finally:
        pool.kill()
    assert one.shared == len(reference.data) and one.data == b""
    assert bytes(slots.read(one, first).data) == reference.data
    assert two.shared is None and two.data == big_reference.data  # too big for a slot: in the message
    assert (one.counts, one.records, two.records) == (reference.counts, 5, len(big))
    slots.give(first)
    assert slots.take() == first


def test_freezing_after_each_chunk_never_freezes_garbage() -> None:
    """`settle_garbage` collects a chunk's cyclic garbage before it freezes what is left: so when
    everything is unfrozen at the end, the collector finds nothing to free. Invalid lines (whose
    errors make cycles) and memos emptied again and again (a tiny PLAN_MEMO_LIMIT) included. In a
    fresh interpreter: threads left by other tests in this one would make garbage of their own."""
    script = r"""
import gc, json, random
import cdss, cdss.result
from cdss.cli import batch
cdss.result.PLAN_MEMO_LIMIT = 8
rules = cdss.load_rules(None)
pick = random.Random(15)
raws = []
for _ in range(700):
    doc = {"back_pain": {"present": pick.choice([True, False, None]), "trend": pick.choice(["improving", None])},
           "red_flags": {"significant_leg_weakness": pick.choice([False, None])},
           "exercise": {"weeks_consistent": pick.randint(0, 12), "stage": pick.choice(["none", "activation", None])}}
    raws.append(json.dumps(doc).encode())
    if pick.random() < 0.1:
        raws.append(pick.choice([b'{"back_pain": {"present": "maybe"}}', b"not json", b"", b"[1, 2]"]))
lines = [("in.jsonl", number, raw) for number, raw in enumerate(raws, start=1)]
reports = []
for fmt, trace in (("json", False), ("fhir", True), ("cds-hooks", False)):
    gc.collect()
    blocks = list(batch.sequential(iter(lines), rules, trace=trace, fmt=fmt))
    frozen = gc.get_freeze_count()
    gc.unfreeze()
    reports.append({"frozen": frozen, "garbage": gc.collect(), "records": sum(b.records for b in blocks),
                    "errors": sum(b.errors for b in blocks), "lines": sum(1 for raw in raws if raw.strip())})
print(json.dumps(reports))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    for report in json.loads(done.stdout):
        assert report["frozen"] > 0 and report["records"] == report["lines"] and report["errors"] > 20
        assert report["garbage"] == 0


def test_a_batch_run_inside_another_program_leaves_its_heap_unfrozen() -> None:
    """`run` (what `cdss evaluate --jsonl` calls) unfreezes at the end what `settle_garbage` froze, so a
    program that runs the command in-process (click's CliRunner, a host) gets its collector back;
    one that had frozen objects itself keeps them frozen."""
    script = r"""
import gc, io, sys
import cdss
from cdss.cli import batch
data = b"\n".join([b'{"back_pain": {"present": true}}'] * 200 + [b"not json"]) + b"\n"
counts = []
for before in (False, True):
    if before:
        gc.freeze()
    frozen_before = gc.get_freeze_count()
    code = batch.run([("in.jsonl", io.BytesIO(data))], cdss.load_rules(None), out=io.BytesIO(), workers=1,
                     trace=False, fmt="json", err=io.StringIO())
    counts.append((code, frozen_before, gc.get_freeze_count()))
print(counts)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    import ast

    (code, before, after), (_, host_before, host_after) = ast.literal_eval(done.stdout)
    assert code == 1 and before == 0 and after == 0
    assert host_before > 0 and host_after >= host_before
