"""`cdss batch` and cdss.batch on a real Dask LocalCluster (2 worker processes).

The reference for every output is `cdss evaluate --jsonl` run on the same input: the
Dask path must write the very same lines, whatever happens to its workers.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdss.batch import RuleSource, arrow_schema, evaluate_frame, evaluate_partition, meta  # noqa: E402
from cdss.batch import job  # noqa: E402
from cdss.batch.inputs import plan_jsonl, read_rows  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
import generate  # noqa: E402

CDSS = [sys.executable, "-c", "from cdss.cli import main; main()"]
N = 20_000


def _lines() -> list[bytes]:
    """20,000 input lines: valid documents, schema-invalid ones, malformed JSON, blanks, bad bytes, one huge line."""
    valid = [json.dumps(doc, separators=(",", ":")).encode() for doc in generate.patients(17_500, seed=14)]
    mutants = [json.dumps(doc, separators=(",", ":")).encode()
               for doc in generate.mutants(generate.patients(700, seed=15), per_doc=4, seed=14)]
    mutants = mutants[:2_440]  # lone surrogates ("\ud800") among them: an error record on both paths
    odd = [b"", b"   ", b"not json", b'{"patient_id": "a", "patient_id": "b"}', b'{"age": NaN}', b"[1, 2]",
           b'"a string"', b"\xff\xfe{}", b'{"red_flags": {"significant_leg_weakness": tru', b"null",
           b'{"patient_id": "x"' + b" " * (1024 * 1024 + 10) + b"}"]
    lines = valid + mutants + [odd[i % len(odd)] for i in range(N - len(valid) - len(mutants))]
    random.Random(14).shuffle(lines)
    assert len(lines) == N
    return lines


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The input file and `cdss evaluate --jsonl`'s output for it (the reference)."""
    directory = tmp_path_factory.mktemp("batch-data")
    path = directory / "patients.jsonl"
    path.write_bytes(b"\n".join(_lines()))  # no newline after the last line: still a line
    done = subprocess.run([*CDSS, "evaluate", "--jsonl", str(path)], capture_output=True, cwd=directory)
    assert done.returncode == 1, done.stderr  # some lines are invalid
    reference = done.stdout.splitlines(keepends=True)
    assert 19_000 < len(reference) < N  # blank lines give no output line
    return {"dir": directory, "path": path, "reference": reference}


@pytest.fixture(scope="module")
def client() -> Any:
    c = job.local_client(2)
    yield c
    cluster = c.cluster
    c.close()
    cluster.close()


def _head(data: dict[str, Any], count: int) -> tuple[Path, list[bytes]]:
    """A file of the first `count` input lines, and its reference output (cut from the whole file's)."""
    lines = data["path"].read_bytes().splitlines(keepends=True)[:count]
    path = data["dir"] / f"head-{count}.jsonl"
    path.write_bytes(b"".join(lines))
    records = sum(1 for line in lines if line.strip())
    old, new = f'{{"file":"{data["path"]}",'.encode(), f'{{"file":"{path}",'.encode()
    return path, [line.replace(old, new, 1) if line.startswith(old) else line for line in data["reference"][:records]]


def _outputs(directory: Path, fmt: str = "jsonl") -> list[Path]:
    return sorted(directory.glob(f"*.{fmt}"))


def _concatenated(directory: Path) -> list[bytes]:
    return b"".join(p.read_bytes() for p in _outputs(directory)).splitlines(keepends=True)


def _expected_summary(reference: list[bytes]) -> tuple[Counter[str], int]:
    urgency: Counter[str] = Counter()
    errors = 0
    for line in reference:
        record = json.loads(line)
        if "error" in record:
            errors += 1
        else:
            urgency[record["urgency"]] += 1
    return urgency, errors


# ---------------------------------------------------------------- the command, end to end


def test_cdss_batch_writes_what_evaluate_jsonl_writes_and_a_summary_that_adds_up(data: dict[str, Any]) -> None:
    out = data["dir"] / "out-cli"
    done = subprocess.run([*CDSS, "batch", str(data["path"]), "--output", str(out), "--local-workers", "2",
                           "--partition-lines", "2500"], capture_output=True, text=True, cwd=data["dir"])
    assert done.returncode == 1, done.stderr  # invalid lines: exit 1, as evaluate --jsonl
    assert "Traceback" not in done.stderr
    assert "cdss: Dask dashboard: http://" in done.stderr
    assert "records/s" not in done.stderr and "/s, ETA" in done.stderr  # the progress line: rate and ETA
    assert "cdss: counts add up: 20,000 input lines = " in done.stderr
    assert len(_outputs(out)) == 8
    assert _concatenated(out) == data["reference"]  # line for line, byte for byte
    summary = json.loads((out / "_SUMMARY.json").read_text())
    urgency, errors = _expected_summary(data["reference"])
    assert summary["input_count"] == N
    assert summary["urgency"] == {u: urgency[u] for u in job.URGENCIES}
    assert summary["errors"] == errors
    assert summary["evaluated"] + summary["errors"] + summary["blank_lines"] == N
    assert summary["output_records"] == len(data["reference"])
    assert summary["adds_up"] is True
    rules = Counter(r for line in data["reference"] for r in _named_rules(json.loads(line)))
    assert summary["rules"] == dict(rules)
    assert not list(out.glob(".*tmp*"))


def _named_rules(record: dict[str, Any]) -> set[str]:
    if "error" in record:
        return set()
    return {f["rule"] for f in record["findings"]} | {c["rule"] for c in record["cards"]}


def test_non_empty_output_needs_resume_and_resume_needs_the_same_run(data: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    done = subprocess.run([*CDSS, "batch", str(data["path"]), "--output", str(tmp_path), "--local-workers", "1"],
                          capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1].startswith("cdss: error: --output ") and "--resume" in done.stderr
    assert "Traceback" not in done.stderr


def test_scheduler_option_uses_an_existing_cluster(client: Any, data: dict[str, Any]) -> None:
    path, reference = _head(data, 2_000)
    out = data["dir"] / "out-scheduler"
    done = subprocess.run([*CDSS, "batch", str(path), "--output", str(out), "--scheduler", client.scheduler.address,
                           "--partition-lines", "500"], capture_output=True, text=True)
    assert done.returncode == 1, done.stderr
    assert "cdss: counts add up: 2,000 input lines = " in done.stderr
    assert _concatenated(out) == reference
    assert len(client.scheduler_info()["workers"]) == 2  # the command closed its client, not the cluster


# ---------------------------------------------------------------- nothing lost, nothing twice


def _pids(client: Any) -> dict[str, int]:
    return client.run(os.getpid)


def test_a_worker_killed_mid_job_still_gives_the_complete_identical_output(client: Any, data: dict[str, Any]) -> None:
    path, reference = _head(data, 6_000)
    out = data["dir"] / "out-kill"
    before = _pids(client)
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["report"] = job.run(client, [str(path)], RuleSource(),
                                       job.Options(output=out, partition_lines=250), err=open(os.devnull, "w"))
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            result["error"] = error

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    while len(_outputs(out)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not (out / "_SUMMARY.json").exists(), "the job ended before a worker could be killed"
    victim = next(iter(before.values()))
    os.kill(victim, signal.SIGKILL)
    written_at_kill = len(_outputs(out))
    thread.join(120)
    assert "error" not in result, result.get("error")
    assert written_at_kill < 24
    assert victim not in _pids(client).values()  # it really died (the nanny started a new one)
    assert len(_outputs(out)) == 24
    assert _concatenated(out) == reference
    assert result["report"].summary["adds_up"] is True
    assert not list(out.glob(".*tmp*"))


def test_resume_writes_only_the_missing_partitions(client: Any, data: dict[str, Any]) -> None:
    path, reference = _head(data, 6_000)
    out = data["dir"] / "out-resume"
    options = job.Options(output=out, partition_lines=600)
    job.run(client, [str(path)], RuleSource(), options, err=open(os.devnull, "w"))
    files = _outputs(out)
    # an interrupted run: two partitions never finished (one left a temporary file), no summary
    missing = [files[3], files[7]]
    for lost in missing:
        lost.unlink()
        (out / "_stats" / f"{lost.stem}.json").unlink()
    (out / f".{missing[0].name}.tmp-0123").write_bytes(b'{"half":')
    (out / "_SUMMARY.json").unlink()
    stamps = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _outputs(out)}
    with pytest.raises(job.JobError, match="not empty"):
        job.run(client, [str(path)], RuleSource(), options)
    with pytest.raises(job.JobError, match="partition_lines"):
        job.run(client, [str(path)], RuleSource(), job.Options(output=out, partition_lines=999, resume=True))
    report = job.run(client, [str(path)], RuleSource(), job.Options(output=out, partition_lines=600, resume=True),
                     err=open(os.devnull, "w"))
    assert sorted(report.computed) == sorted(p.stem for p in missing)
    assert len(report.skipped) == 8
    assert {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in _outputs(out) if p not in missing} == stamps
    assert _concatenated(out) == reference
    assert report.summary["input_count"] == 6_000 and report.summary["adds_up"] is True
    assert not list(out.glob(".*tmp*"))


def test_ctrl_c_then_resume_gives_the_complete_identical_output(client: Any, data: dict[str, Any]) -> None:
    path, reference = _head(data, 8_000)
    out = data["dir"] / "out-interrupted"
    command = [*CDSS, "batch", str(path), "--output", str(out), "--local-workers", "2", "--partition-lines", "250"]
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    deadline = time.monotonic() + 60
    while len(_outputs(out)) < 3 and time.monotonic() < deadline and run.poll() is None:
        time.sleep(0.02)
    os.killpg(run.pid, signal.SIGINT)  # Ctrl-C: the whole process group, workers included
    _, stderr = run.communicate(timeout=60)
    assert run.returncode == 130, stderr
    assert "cdss: interrupted" in stderr
    done_before = {p.name: p.stat().st_mtime_ns for p in _outputs(out)}
    assert 3 <= len(done_before) < 32 and not (out / "_SUMMARY.json").exists()
    report = job.run(client, [str(path)], RuleSource(None, {}, cdss_rules().info.digest),
                     job.Options(output=out, partition_lines=250, resume=True), err=open(os.devnull, "w"))
    assert sorted(report.skipped) == sorted(name.rsplit(".", 1)[0] for name in done_before)
    assert len(report.computed) == 32 - len(done_before)
    assert {p.name: p.stat().st_mtime_ns for p in _outputs(out) if p.name in done_before} == done_before
    assert _concatenated(out) == reference
    assert not list(out.glob(".*tmp*"))


def test_the_rule_set_is_loaded_once_per_worker_not_per_task(client: Any, data: dict[str, Any]) -> None:
    def loads() -> dict[str, int]:
        from cdss.batch import frame

        return {repr(key): count for key, count in frame.loads.items()}

    source = RuleSource(parameters={"escalation_refer_weeks": "5"})
    path, _ = _head(data, 2_000)
    job.run(client, [str(path)], source, job.Options(output=data["dir"] / "out-once", partition_lines=100),
            err=open(os.devnull, "w"))
    per_worker = client.run(loads)
    assert len(per_worker) == 2
    for counts in per_worker.values():
        assert counts[repr(source.key())] == 1  # 20 partitions, 2 workers: one load each


# ---------------------------------------------------------------- other formats


def test_gzip_input_is_one_partition_with_the_same_output(client: Any, data: dict[str, Any]) -> None:
    plain, lines = _head(data, 1_500)
    packed = data["dir"] / "head.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    reference = b"".join(lines)
    out = data["dir"] / "out-gz"
    job.run(client, [str(packed)], RuleSource(), job.Options(output=out, partition_lines=500), err=open(os.devnull, "w"))
    (only,) = _outputs(out)
    expected = reference.replace(f'"file":"{plain}"'.encode(), f'"file":"{packed}"'.encode())
    assert only.read_bytes() == expected


def test_parquet_in_parquet_out(client: Any, data: dict[str, Any]) -> None:
    lines = data["path"].read_bytes().splitlines()[:3_000]
    texts: list[Any] = [line.decode("utf-8", "replace") for line in lines]
    texts[10] = None  # a missing value: an error row in its place
    path = data["dir"] / "patients.parquet"
    pq.write_table(pa.table({"id": list(range(len(texts))), "document": texts}), path, row_group_size=1_200)
    out = data["dir"] / "out-parquet"
    report = job.run(client, [str(path)], RuleSource(), job.Options(output=out, fmt="parquet", partition_lines=500),
                     err=open(os.devnull, "w"))
    files = _outputs(out, "parquet")
    assert len(files) == 8  # row groups of 1,200, 1,200 and 600 rows: 500 + 500 + 200, twice, then 500 + 100
    table = pa.concat_tables([pq.read_table(f) for f in files])
    assert table.schema == arrow_schema()
    assert table.column("row").to_pylist() == list(range(1, len(texts) + 1))  # every row, once, in order
    rules = cdss_rules()
    for index in (0, 1, 2, 10, 2_999, *range(100, 3_000, 97)):
        record = table.slice(index, 1).to_pylist()[0]
        value = texts[index]
        expected = next(evaluate_partition([value], rules, file=str(path), first=index + 1, kind="row"))
        assert record["result"] == expected.json
        result = json.loads(record["result"])
        if "error" in result:
            assert record["error"] == result["error"]["message"] and record["urgency"] is None
            assert result["row"] == index + 1 and result["file"] == str(path)
        else:
            assert (record["urgency"], record["red_flag_screening"], record["plan_status"]) == (
                result["urgency"], result["red_flag_screening"], result["plan"]["status"])
            assert record["rules"] == sorted(_named_rules(result))
    assert json.loads(table.slice(10, 1).to_pylist()[0]["result"])["error"]["found"].startswith("null")
    assert report.summary["input_count"] == 3_000 and report.summary["blank_lines"] == 0


def cdss_rules() -> Any:
    import cdss

    return cdss.load_rules()


def test_evaluate_frame_works_with_dask_map_partitions(client: Any, data: dict[str, Any]) -> None:
    import dask.dataframe as dd

    lines = [line.decode("utf-8", "replace") for line in data["path"].read_bytes().splitlines()[:400]]
    frame = pd.DataFrame({"document": lines})
    direct = evaluate_frame(frame, cdss_rules())
    assert list(direct.columns) == list(meta().columns)
    assert direct["row"].tolist() == list(range(1, 401))
    distributed = dd.from_pandas(frame, npartitions=4).map_partitions(
        evaluate_frame, rules=RuleSource(), column="document", meta=meta()).compute()
    assert distributed["result"].tolist() == direct["result"].tolist()[:100] + [
        r for part in range(1, 4) for r in evaluate_frame(frame.iloc[part * 100:(part + 1) * 100], cdss_rules())["result"]]
    valid = [json.loads(r) for r in distributed["result"] if '"error":' not in r[:200]]
    assert valid and all(v["urgency"] in job.URGENCIES for v in valid)


# ---------------------------------------------------------------- no cluster


def test_an_engine_failure_is_an_error_record_in_place_and_the_partition_goes_on() -> None:
    import cdss

    rules = cdss.load_rules()
    rules._durable().close()  # a real engine failure: every evaluation now raises EngineError
    lines = [b'{"red_flags": {"significant_leg_weakness": true}}', b"not json", b"{}"]
    out = list(evaluate_partition(lines, rules, file="in.jsonl", first=1))
    assert [o.position for o in out] == [1, 2, 3]
    records = [json.loads(o.json) for o in out]
    assert all(r["file"] == "in.jsonl" and "error" in r for r in records)
    assert "EngineError" in records[0]["error"]["found"] and "bug in cdss" in records[0]["error"]["message"]
    assert "EngineError" not in records[1]["error"]["found"]  # the malformed line keeps its own error


def test_lone_surrogate_is_an_error_record_not_a_crash() -> None:
    (out,) = evaluate_partition([b'{"patient_id": "\\ud800"}'], cdss_rules(), file="in.jsonl", first=7)
    record = json.loads(out.json)
    assert record["file"] == "in.jsonl" and record["line"] == 7 and "surrogate" in record["error"]["found"]
    out.json.encode("utf-8")


@pytest.mark.parametrize("content", [b"", b"a\n", b"a", b"a\nb\nc\nd\ne", b"a\nb\nc\nd\n", b"\n\n\n\n\n\n\n"])
@pytest.mark.parametrize("lines", [1, 2, 3, 100])
def test_partitions_cover_every_line_once(tmp_path: Path, content: bytes, lines: int, monkeypatch: pytest.MonkeyPatch) -> None:
    from cdss.batch import inputs

    monkeypatch.setattr(inputs, "BLOCK", 2)  # lines and cuts across read blocks
    path = tmp_path / "in.jsonl"
    path.write_bytes(content)
    parts = plan_jsonl(0, str(path), lines)
    assert [row for part in parts for row in read_rows(part)] == content.splitlines(keepends=True)
    assert [p.first for p in parts] == [1 + sum(p.count for p in parts[:i]) for i in range(len(parts))]
    assert all(p.count <= lines for p in parts)
