"""`cdss batch` on Dask: plan partitions, evaluate them on workers, write, check, summarise.

Nothing lost, nothing twice: each partition's output is written under a temporary name
and renamed when complete (its counts first, in `_stats/`), so a file that exists is whole;
a worker that dies mid-partition leaves only a temporary file, and Dask runs the
partition again elsewhere. `resume=True` computes only partitions without an output file.
The summary's counts are checked against the input count the client took when planning
(lines or rows), not against what workers say they read.

The rule set travels to workers as a `RuleSource` (path, parameters, digest) in a
`WorkerPlugin`: each worker process loads it once, at start (and again after a restart).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..cli.batch import chunked
from .frame import RuleSource, to_arrow
from .inputs import DEFAULT_COLUMN, InputError, Partition, file_identity, kind_of, plan_jsonl, plan_parquet, read_rows
from .records import Outcome, evaluate_partition

URGENCIES = ("emergency", "see-professional", "self-care", "none")
SUMMARY = "_SUMMARY.json"
MANIFEST = "_MANIFEST.json"
STATS = "_stats"
SHOWN_ERRORS = 5
DEFAULT_PARTITION_LINES = 10_000


class JobError(Exception):
    """A problem the user can fix (output directory, inputs changed since the interrupted run)."""


class CountMismatch(Exception):
    """The output does not account for every input record: never report such a run as complete."""


# ---------------------------------------------------------------- on a worker


def _count(rows: Iterator[Any], seen: list[int]) -> Iterator[Any]:
    for row in rows:
        seen[0] += 1
        yield row


def _write_atomically(path: Path, write: Any) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
    try:
        write(temporary)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


class Tally:
    """The counts of one partition, kept while its records stream to disk (the records are not kept)."""

    def __init__(self) -> None:
        self.records = 0
        self.urgency: Counter[str] = Counter()
        self.rules: Counter[str] = Counter()
        self.errors = 0
        self.first_errors: list[str] = []

    def count(self, outcomes: Iterator[Outcome]) -> Iterator[Outcome]:
        for outcome in outcomes:
            self.records += 1
            if outcome.error is None:
                self.urgency[outcome.urgency] += 1  # type: ignore[index]
                self.rules.update(outcome.rules)
            else:
                self.errors += 1
                if len(self.first_errors) < SHOWN_ERRORS:
                    self.first_errors.append(outcome.where)
            yield outcome

    def stats(self, part: Partition, seen: int) -> dict[str, Any]:
        return {"name": part.name, "input": part.count, "records": self.records, "blank": seen - self.records,
                "urgency": {u: self.urgency.get(u, 0) for u in URGENCIES}, "rules": dict(sorted(self.rules.items())),
                "errors": self.errors, "first_errors": self.first_errors}


WRITE_CHUNK = 2_000


def _write_records(outcomes: Iterator[Outcome], path: Path, fmt: str) -> None:
    if fmt == "parquet":
        import pyarrow.parquet as pq

        from .frame import arrow_schema

        with pq.ParquetWriter(path, arrow_schema()) as writer:
            for chunk in chunked(outcomes, WRITE_CHUNK * 5):
                writer.write_table(to_arrow(chunk))
        return
    with open(path, "wb") as out:
        for chunk in chunked(outcomes, WRITE_CHUNK):
            out.write("".join([o.json + "\n" for o in chunk]).encode("utf-8"))


def run_partition(part: Partition, source: RuleSource, output: str, fmt: str, column: str) -> dict[str, Any]:
    """Evaluate one partition, stream its output to a temporary file, record its counts, rename: return the counts."""
    rules = source.rules()
    seen = [0]
    kind = "row" if part.kind == "parquet" else "line"
    tally = Tally()
    outcomes = tally.count(evaluate_partition(_count(read_rows(part, column), seen), rules, file=part.path,
                                              first=part.first, kind=kind))
    directory = Path(output)
    target = directory / f"{part.name}.{fmt}"
    temporary = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex}")
    try:
        _write_records(outcomes, temporary, fmt)
        with open(temporary, "rb") as handle:
            os.fsync(handle.fileno())
        if seen[0] != part.count:
            raise RuntimeError(f"{part.path}: expected {part.count:,} {kind}s from {part.first:,}, read {seen[0]:,}: "
                               "was the file changed during the run?")
        stats = tally.stats(part, seen[0])
        _write_atomically(directory / STATS / f"{part.name}.json",
                          lambda p: p.write_text(json.dumps(stats, sort_keys=True), encoding="utf-8"))
        os.replace(temporary, target)  # last: an output file that exists is whole and has its counts
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return stats


try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # pragma: no cover - the dask extra is not installed; the command says so
    WorkerPlugin = object  # type: ignore[assignment,misc]


class RulesPlugin(WorkerPlugin):  # type: ignore[misc,valid-type]
    """Loads the rule set once in each worker process, when the worker starts."""

    name = "cdss-rules"

    def __init__(self, source: RuleSource) -> None:
        self.source = source

    def setup(self, worker: Any) -> None:
        self.source.rules()


# ---------------------------------------------------------------- on the client


def plan(inputs: Sequence[str], lines: int, column: str = DEFAULT_COLUMN) -> list[Partition]:
    """Every partition of every input, in input order."""
    parts: list[Partition] = []
    for index, path in enumerate(inputs):
        if kind_of(path) == "parquet":
            parts.extend(plan_parquet(index, path, lines, column))
        else:
            parts.extend(plan_jsonl(index, path, lines))
    return parts


@dataclass
class Options:
    output: Path
    fmt: str = "jsonl"
    resume: bool = False
    partition_lines: int = DEFAULT_PARTITION_LINES
    column: str = DEFAULT_COLUMN


@dataclass
class Report:
    """What a run did: the summary written to `_SUMMARY.json`, and which partitions it computed."""

    summary: dict[str, Any]
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _manifest(inputs: Sequence[str], parts: list[Partition], source: RuleSource, options: Options) -> dict[str, Any]:
    return {"inputs": [file_identity(p) for p in inputs], "partition_lines": options.partition_lines,
            "format": options.fmt, "column": options.column,
            "rule_set": {"path": source.path, "digest": source.digest, "parameters": dict(source.parameters)},
            "partitions": [p.name for p in parts]}


def precheck(options: Options) -> None:
    """Refuse an unusable output directory before any cluster is started (cheap, on the client)."""
    out = options.output
    if out.exists() and not out.is_dir():
        raise JobError(f"--output {out}: exists and is not a directory")
    if out.is_dir() and not options.resume and any(out.iterdir()):
        raise JobError(f"--output {out}: not empty; give an empty or new directory, or --resume to finish "
                       "an interrupted run into it")


def prepare_output(inputs: Sequence[str], parts: list[Partition], source: RuleSource, options: Options) -> set[str]:
    """Create / check the output directory; the names of partitions already complete (with --resume)."""
    out = options.output
    manifest = _manifest(inputs, parts, source, options)
    precheck(options)
    existing = list(out.iterdir()) if out.is_dir() else []
    done: set[str] = set()
    if existing:
        try:
            before = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise JobError(f"--resume: {out} has no readable {MANIFEST}: it was not written by cdss batch") from None
        changed = [key for key in manifest if before.get(key) != manifest[key]]
        if changed:
            raise JobError(f"--resume: {out} was written for other {', '.join(changed)}; run the same command "
                           "as the interrupted run, or give a new --output directory")
        for part in parts:
            if (out / f"{part.name}.{options.fmt}").is_file() and (out / STATS / f"{part.name}.json").is_file():
                done.add(part.name)
    (out / STATS).mkdir(parents=True, exist_ok=True)
    (out / SUMMARY).unlink(missing_ok=True)  # a summary exists only for a complete output
    _write_atomically(out / MANIFEST, lambda p: p.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n",
                                                             encoding="utf-8"))
    return done


def summarise(inputs: Sequence[str], parts: list[Partition], stats: dict[str, dict[str, Any]],
              source: RuleSource, options: Options) -> dict[str, Any]:
    """The summary of a complete output; raises CountMismatch if the counts do not add up."""
    unit = "rows" if all(p.kind == "parquet" for p in parts) and parts else "lines" if all(
        p.kind != "parquet" for p in parts) else "records"
    expected = sum(p.count for p in parts)
    urgency = Counter({u: 0 for u in URGENCIES})
    rules: Counter[str] = Counter()
    records = blank = errors = 0
    first_errors: list[str] = []
    for part in parts:
        s = stats[part.name]
        if s["input"] != part.count:
            raise CountMismatch(f"partition {part.name}: {s['input']:,} input {unit} counted, {part.count:,} planned")
        records += s["records"]
        blank += s["blank"]
        errors += s["errors"]
        urgency.update(s["urgency"])
        rules.update(s["rules"])
        first_errors.extend(s["first_errors"][: SHOWN_ERRORS - len(first_errors)])
    evaluated = sum(urgency.values())
    check = f"{expected:,} input {unit} = {evaluated:,} evaluated + {errors:,} invalid + {blank:,} blank lines skipped"
    if evaluated + errors != records or records + blank != expected:
        raise CountMismatch(f"the output does not add up: {check} is false ({records:,} output records)")
    return {
        "inputs": list(inputs),
        "input_count": expected,
        "output_records": records,
        "evaluated": evaluated,
        "errors": errors,
        "blank_lines": blank,
        "urgency": {u: urgency[u] for u in URGENCIES},
        "rules": dict(sorted(rules.items())),
        "first_errors": first_errors,
        "partitions": len(parts),
        "format": options.fmt,
        "rule_set": {"digest": source.digest, "parameters": dict(sorted(source.parameters.items()))},
        "check": check,
        "adds_up": True,
    }


class Progress:
    """A progress bar with rate and ETA on stderr (redrawn on a terminal, a line per 10 % otherwise)."""

    def __init__(self, total: int, stream: IO[str]) -> None:
        self.total = max(total, 1)
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.start = time.monotonic()
        self.done = 0
        self.shown_step = -1

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else 0.0
        width = 30
        filled = int(width * self.done / self.total)
        eta = f"{int(left) // 60}:{int(left) % 60:02d}"
        return (f"cdss: [{'#' * filled}{'.' * (width - filled)}] {100 * self.done // self.total:3d}% "
                f"{self.done:,}/{self.total:,} records, {rate:,.0f}/s, ETA {eta}")

    def update(self, count: int) -> None:
        self.done += count
        if self.tty:
            self.stream.write("\r" + self.line())
            self.stream.flush()
        elif (step := 10 * self.done // self.total) > self.shown_step:
            self.shown_step = step
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def run(client: Any, inputs: Sequence[str], source: RuleSource, options: Options, *,
        err: IO[str] | None = None) -> Report:
    """Evaluate every input on the Dask cluster behind `client`; write the output and `_SUMMARY.json`."""
    from distributed import as_completed

    err = err or sys.stderr
    try:
        parts = plan(inputs, options.partition_lines, options.column)
    except InputError as error:
        raise JobError(str(error)) from None
    done = prepare_output(inputs, parts, source, options)
    todo = [p for p in parts if p.name not in done]
    if done:
        err.write(f"cdss: --resume: {len(done):,} of {len(parts):,} partitions already complete, "
                  f"computing {len(todo):,}\n")
    client.register_plugin(RulesPlugin(source), name=RulesPlugin.name)
    output = str(options.output.resolve())
    progress = Progress(sum(p.count for p in todo), err)
    futures = client.map(run_partition, todo, source=source, output=output, fmt=options.fmt, column=options.column,
                         key=[f"cdss-{uuid.uuid4().hex[:8]}-{p.name}" for p in todo], pure=False)
    try:
        for future in as_completed(futures):
            stats = future.result()
            progress.update(stats["input"])
    finally:
        progress.close()
        for future in futures:
            future.cancel()
    stats_by_name = {}
    for part in parts:
        with open(options.output / STATS / f"{part.name}.json", encoding="utf-8") as handle:
            stats_by_name[part.name] = json.load(handle)
    summary = summarise(inputs, parts, stats_by_name, source, options)
    for stale in options.output.glob(".*.tmp-*"):  # left by workers killed mid-write
        stale.unlink(missing_ok=True)
    _write_atomically(options.output / SUMMARY, lambda p: p.write_text(
        json.dumps(summary, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"))
    return Report(summary, [p.name for p in todo], sorted(done))


def local_client(workers: int) -> Any:
    """A LocalCluster of `workers` single-threaded processes (durable-rules is not thread-safe), and its client."""
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    client = Client(cluster)
    client.run(_ignore_interrupt)
    return client


def _ignore_interrupt() -> None:
    """In a local worker: Ctrl-C reaches the whole process group; let the command stop the workers
    (it closes the cluster) instead of every worker printing a KeyboardInterrupt traceback."""
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
