"""`cdss evaluate --jsonl`: JSON Lines in, one result (or error record) per line out, streaming.

Memory stays constant: input is read one line at a time and, with `--workers N`, at most
a fixed number of chunks are in flight. (`Pool.imap` would not do: its feeder thread
drains the whole input iterator into the task queue as fast as it can read it.) Output
order is input order. A bad line yields an error record in place and the batch goes on.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from .input import InputProblem, iter_lines, oversized_line, parse_document, patient_problem, with_fhir_options
from ..result import compact

if TYPE_CHECKING:
    from ..loader import LoadedRules
    from ..ruleset import RuleSet

CHUNK_LINES = 256
URGENCIES = ("emergency", "see-professional", "self-care", "none")

Line = tuple[str, int, "bytes | None"]  # input name, line number, bytes (None: over the size cap)
Output = tuple[str, "str | None", "str | None"]  # output line, urgency (a result), error location (an error)
SHOWN_ERRORS = 5


class Block:
    """Output lines ready to write (UTF-8, newline-terminated) and what they hold, for the summary.

    A worker returns one Block per chunk: one bytes object crosses the process boundary
    instead of hundreds of small strings.
    """

    __slots__ = ("data", "records", "counts", "errors", "first_errors")

    def __init__(self, outputs: list[Output]) -> None:
        self.data = b"".join(text.encode("utf-8") + b"\n" for text, _, _ in outputs)
        self.records = len(outputs)
        self.counts = dict.fromkeys(URGENCIES, 0)
        self.errors = 0
        self.first_errors: list[str] = []
        for _, urgency, where in outputs:
            if urgency is not None:
                self.counts[urgency] += 1
            elif where is not None:
                self.errors += 1
                if len(self.first_errors) < SHOWN_ERRORS:
                    self.first_errors.append(where)


def error_record(name: str, line: int | None, problem: InputProblem) -> str:
    record: dict[str, Any] = {"file": name}
    if line is not None:
        record["line"] = line
    record["error"] = problem.record()
    return compact(record)


class Evaluator:
    """Evaluates raw input lines into output lines; one per process."""

    def __init__(self, rules: RuleSet, *, trace: bool, fmt: str, allow_in_progress: bool = False) -> None:
        self.rules = rules
        self.trace = trace
        self.fmt = fmt
        self.allow_in_progress = allow_in_progress

    def render(self, assessment: Any) -> str:
        if self.fmt == "cds-hooks":
            return compact(assessment.to_cds_hooks())
        if self.fmt == "fhir":
            from ..fhir.guidance import guidance_bundle

            return compact(guidance_bundle(assessment.to_dict()))
        return str(assessment.to_json())

    def line(self, name: str, number: int, raw: bytes | None) -> Output | None:
        """The output for one input line, or None for a blank line (skipped)."""
        from ..errors import PatientDataError

        try:
            if raw is None:
                raise oversized_line()
            if not raw.strip():
                return None
            document = parse_document(raw, single_line=True)
            try:
                assessment = self.rules.evaluate(with_fhir_options(document, self.rules, self.allow_in_progress),
                                                 trace=self.trace)
                text = self.render(assessment)  # --format fhir may refuse a patient_id FHIR cannot carry
            except PatientDataError as error:
                raise patient_problem(error, document) from None
        except InputProblem as problem:
            return error_record(name, number, problem), None, f"{name}:{number}"
        return text, assessment.urgency, None

    def chunk(self, lines: list[Line]) -> list[Output]:
        """The outputs of many lines, in order (blank lines skipped): every parsed document goes
        through one `evaluate_many` call, so the engine shares a session per chunk of patients."""
        from ..errors import PatientDataError

        slots: list[Output | _Parsed] = []  # per non-blank line: its error Output, or its parsed document
        for name, number, raw in lines:
            try:
                if raw is None:
                    raise oversized_line()
                if not raw.strip():
                    continue
                document = parse_document(raw, single_line=True)
                try:
                    slots.append(_Parsed(name, number, document,
                                         with_fhir_options(document, self.rules, self.allow_in_progress)))
                except PatientDataError as error:
                    raise patient_problem(error, document) from None
            except InputProblem as problem:
                slots.append((error_record(name, number, problem), None, f"{name}:{number}"))
        results = self.rules.evaluate_many([s.evaluated for s in slots if isinstance(s, _Parsed)], trace=self.trace)
        out: list[Output] = []
        for slot in slots:
            if not isinstance(slot, _Parsed):
                out.append(slot)
                continue
            result = next(results)
            try:
                if isinstance(result, PatientDataError):
                    raise result
                out.append((self.render(result), result.urgency, None))  # --format fhir may refuse a patient_id
            except PatientDataError as error:
                problem = patient_problem(error, slot.document)
                out.append((error_record(slot.name, slot.number, problem), None, f"{slot.name}:{slot.number}"))
        return out


class _Parsed:
    """A line parsed into a document, waiting for its result."""

    __slots__ = ("name", "number", "document", "evaluated")

    def __init__(self, name: str, number: int, document: Any, evaluated: Any) -> None:
        self.name, self.number, self.document = name, number, document
        self.evaluated = evaluated  # what is evaluated: the document, or the patient a FHIR response converts to


_worker: Evaluator | None = None


def _init_worker(loaded: LoadedRules, overrides: Mapping[str, Any], trace: bool, fmt: str,
                 allow_in_progress: bool = False) -> None:
    global _worker
    from ..engine import tune_allocator
    from ..ruleset import RuleSet

    tune_allocator()
    _worker = Evaluator(RuleSet(loaded, overrides), trace=trace, fmt=fmt, allow_in_progress=allow_in_progress)


def _run_chunk(lines: list[Line]) -> Block:
    assert _worker is not None, "worker not initialised"
    return Block(_worker.chunk(lines))


def read_lines(inputs: Iterable[tuple[str, BinaryIO]], live: set[str] | None = None) -> Iterator[Line]:
    """Every line of every input; the names of inputs that are not regular files (pipes, terminals:
    lines may arrive one at a time) are added to `live` before their first line."""
    for name, stream in inputs:
        if live is not None and not _regular(stream):
            live.add(name)
        for number, raw in iter_lines(stream):
            yield name, number, raw


def _regular(stream: Any) -> bool:
    import os
    import stat

    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


def _chunks(lines: Iterator[Line], size: int) -> Iterator[list[Line]]:
    chunk: list[Line] = []
    for item in lines:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def parallel(lines: Iterator[Line], rules: RuleSet, *, workers: int, trace: bool, fmt: str,
             allow_in_progress: bool = False) -> Iterator[Block]:
    """Outputs in input order from `workers` processes, each loading the rule set once."""
    import multiprocessing

    overrides = {name: value for name, value in rules.parameter_values.items()
                 if value != rules.parameters[name].default}
    window = workers * 3
    with multiprocessing.Pool(workers, _init_worker, (rules.loaded, overrides, trace, fmt, allow_in_progress)) as pool:
        pending: collections.deque[Any] = collections.deque()
        for chunk in _chunks(lines, CHUNK_LINES):
            pending.append(pool.apply_async(_run_chunk, (chunk,)))
            while len(pending) >= window:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def sequential(lines: Iterator[Line], rules: RuleSet, *, trace: bool, fmt: str,
               live: set[str] | None = None, allow_in_progress: bool = False) -> Iterator[Block]:
    """In this process, `BATCH_SIZE` lines of a file at a time (one engine session per chunk);
    lines of the inputs named in `live` one at a time."""
    from ..ruleset import BATCH_SIZE

    evaluator = Evaluator(rules, trace=trace, fmt=fmt, allow_in_progress=allow_in_progress)
    chunk: list[Line] = []
    for item in lines:
        chunk.append(item)
        # a line from a pipe or terminal is answered at once: the next one may be minutes away
        if len(chunk) >= BATCH_SIZE or (live is not None and item[0] in live):
            outputs = evaluator.chunk(chunk)
            chunk = []
            if outputs:
                yield Block(outputs)
    if chunk:
        outputs = evaluator.chunk(chunk)
        if outputs:
            yield Block(outputs)


class Progress:
    """`cdss: 12,345 records` on stderr, redrawn at most 5 times a second; only on a terminal."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.enabled = bool(getattr(stream, "isatty", lambda: False)())
        self.last = 0.0

    def update(self, count: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.last >= 0.2:
            self.last = now
            self.stream.write(f"\rcdss: {count:,} record{'s' if count != 1 else ''} ...")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled and self.last:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def run(inputs: Iterable[tuple[str, BinaryIO]], rules: RuleSet, *, out: BinaryIO, workers: int, trace: bool,
        fmt: str, err: IO[str] | None = None, allow_in_progress: bool = False) -> int:
    """Stream every input; write the summary to `err`; return the exit code (1 if any line was bad)."""
    from ..engine import tune_allocator

    tune_allocator()  # a batch is our own process's work: make every evaluation the fast kind (see there)
    err = err or sys.stderr
    live: set[str] = set()
    lines = read_lines(inputs, live)
    blocks = (parallel(lines, rules, workers=workers, trace=trace, fmt=fmt, allow_in_progress=allow_in_progress)
              if workers > 1 else sequential(lines, rules, trace=trace, fmt=fmt, live=live,
                                             allow_in_progress=allow_in_progress))
    counts = dict.fromkeys(URGENCIES, 0)
    errors = 0
    first_errors: list[str] = []
    total = unflushed = 0
    progress = Progress(err)
    try:
        for block in blocks:
            out.write(block.data)
            total += block.records
            unflushed += block.records
            errors += block.errors
            first_errors.extend(block.first_errors[:SHOWN_ERRORS - len(first_errors)])
            for urgency, n in block.counts.items():
                counts[urgency] += n
            if unflushed >= CHUNK_LINES:
                out.flush()
                unflushed = 0
            progress.update(total)
    finally:
        progress.done()
        out.flush()
    evaluated = sum(counts.values())
    by_urgency = ", ".join(f"{counts[u]:,} {u}" for u in URGENCIES)
    summary = (f"cdss: {total:,} record{'s' if total != 1 else ''}: {evaluated:,} evaluated ({by_urgency}), "
               f"{errors:,} invalid")
    if errors:
        more = errors - len(first_errors)
        summary += f" (at {', '.join(first_errors)}{f' and {more:,} more' if more else ''})"
    err.write(summary + "\n")
    err.flush()
    return 1 if errors else 0
