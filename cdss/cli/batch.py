"""`cdss evaluate --jsonl`: JSON Lines in, one result (or error record) per line out, streaming.

Memory stays constant: input is read one line at a time (with `--workers N`, a regular file
in blocks of whole lines: the parent never handles single lines) and at most
8N chunks of lines are in flight in a thread-free pool of forked workers (`pool.Pool`: the
parent is one select loop; it costs the parent less CPU and fewer wake-ups than
`concurrent.futures.ProcessPoolExecutor`, whose two threads wake per chunk, measured in
docs/SPEED.md). Output order is input order. A chunk holds as many lines as make
about BLOCK_BYTES of output (measured on the blocks already back), so that every message
between the processes stays below glibc's mmap threshold, and the pipes are widened so that
a worker can send a block without waiting for the parent (see `pool.PIPE_BYTES`).

Nothing is lost and nothing hangs (issue 16): a line that cannot be evaluated, for any
reason, yields an error record in its place; a worker that dies is replaced and its chunk is
retried line by line in a fresh worker (a line that fails twice becomes an error record);
SIGINT / SIGTERM end the batch between two writes, within a fraction of a second, with every
written line complete (exit 130 / 143). Each worker evaluates a chunk through one method,
`Evaluator.evaluate_chunk`, so changing how a chunk is evaluated is a local change.
"""

from __future__ import annotations

import collections
import gc
import itertools
import sys
import time
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any, BinaryIO, TypeVar

from ..result import compact
from .input import (MAX_DOCUMENT_BYTES, InputProblem, iter_lines, oversized_line, parse_document, patient_problem,
                    with_fhir_options)
from .pool import Lost, Stopped

if TYPE_CHECKING:
    from ..loader import LoadedRules
    from ..ruleset import RuleSet

CHUNK_LINES = 256
"""The most lines in one chunk (and how many written lines the parent flushes after)."""
FIRST_CHUNK_LINES = 64
"""Lines per chunk until the first blocks tell how many output bytes a line makes."""
MIN_CHUNK_LINES = 16
FIRST_CHUNK_BYTES = 32 * 1024
"""Input bytes per chunk of a regular file until the first blocks tell the output per input byte."""
MIN_CHUNK_BYTES = 4 * 1024
MAX_CHUNK_BYTES = 256 * 1024
BLOCK_BYTES = 512 * 1024
"""Output bytes per chunk aimed at. Measured (40,000 patients, 2 workers): blocks of 1.3 MB
(256 lines of 5 KB) are above the 1 MiB mmap threshold `tune_allocator` sets, so each block,
its pickle and the parent's receive buffer were fresh mappings: 80,000 extra page faults in
the workers and 36,000 in the parent; at about 650 KB they are gone."""
SLOT_BYTES = 1024 * 1024
"""One chunk's output in the shared memory between the parent and its workers (a larger one
travels in the result message). Measured: passing 200 MB of results through the result pipe
(pickle, pipe, the parent's receive buffer, unpickle) was about 0.2 s of the parent's 0.5 s
of CPU for 40,000 patients; from shared memory the parent writes with no copy of its own."""
URGENCIES = ("emergency", "see-professional", "self-care", "none")

Line = tuple[str, int, "bytes | None"]  # input name, line number, bytes (None: over the size cap)
Output = tuple[bytes, "str | None", "str | None"]  # output line (UTF-8, no newline), urgency (a result), error location
SHOWN_ERRORS = 5
FAILED = "failed"
"""The urgency slot of an Output whose line could not be evaluated through no fault of the input."""


class Block:
    """Output lines ready to write (UTF-8, newline-terminated) and what they hold, for the summary.

    A worker returns one Block per chunk: one bytes object crosses the process boundary
    instead of hundreds of small strings.
    """

    __slots__ = ("counts", "data", "errors", "failed", "first_errors", "records", "shared")

    def __init__(self, outputs: list[Output], data: bytes | None = None) -> None:
        if data is None:
            data = b"\n".join([line for line, _, _ in outputs]) + b"\n" if outputs else b""
        self.data: bytes | memoryview = data
        self.shared: int | None = None  # the data's length when a worker left it in a shared-memory slot
        self.records = len(outputs)
        self.counts = dict.fromkeys(URGENCIES, 0)
        self.errors = 0
        self.failed = 0  # lines that are not the input's fault (engine failure, dead worker): a bug
        self.first_errors: list[str] = []
        for _, urgency, where in outputs:
            if urgency == FAILED:
                self.failed += 1
                self.errors += 1
                if len(self.first_errors) < SHOWN_ERRORS and where is not None:
                    self.first_errors.append(where)
            elif urgency is not None:
                self.counts[urgency] += 1
            elif where is not None:
                self.errors += 1
                if len(self.first_errors) < SHOWN_ERRORS:
                    self.first_errors.append(where)

    def __getstate__(self) -> tuple[Any, ...]:
        """One flat tuple: a worker's Block crosses to the parent for every chunk (the default pickle
        of a __slots__ class, attribute by attribute, was 30 µs of the parent's CPU per chunk)."""
        return (self.data, self.shared, self.records, tuple(self.counts.values()), self.errors, self.failed,
                self.first_errors)

    def __setstate__(self, state: tuple[Any, ...]) -> None:
        self.data, self.shared, self.records, counts, self.errors, self.failed, self.first_errors = state
        self.counts = dict(zip(URGENCIES, counts))


def error_record(name: str, line: int | None, problem: InputProblem) -> str:
    record: dict[str, Any] = {"file": name}
    if line is not None:
        record["line"] = line
    record["error"] = problem.record()
    return compact(record)


def error_output(name: str, line: int, problem: InputProblem, urgency: str | None = None) -> Output:
    """The Output of a line that became an error record: the record's UTF-8 bytes, `urgency` (None for
    the input's fault, FAILED for ours) and where it is, for the summary."""
    return error_record(name, line, problem).encode("utf-8"), urgency, f"{name}:{line}"


BLANK = object()
"""What `_parse_line` returns for a blank line (skipped, never an error)."""


def _parse_line(raw: bytes | InputProblem | None) -> Any:
    """The document of one input line, BLANK for a blank line; InputProblem for an oversized or
    unreadable line (already an InputProblem from the reader) or one that is not a document."""
    if raw is None:
        raise oversized_line()
    if isinstance(raw, InputProblem):
        raise raw
    if not raw.strip():
        return BLANK
    return parse_document(raw, single_line=True)


class Evaluator:
    """Evaluates raw input lines into output lines; one per process."""

    def __init__(self, rules: RuleSet, *, trace: bool, fmt: str, allow_in_progress: bool = False) -> None:
        self.rules = rules
        self.trace = trace
        self.fmt = fmt
        self.allow_in_progress = allow_in_progress  # a QuestionnaireResponse still in progress is read

    def render(self, assessment: Any) -> str:
        if self.fmt == "cds-hooks":
            return compact(assessment.to_cds_hooks())
        if self.fmt == "fhir":
            from ..fhir.guidance import guidance_bundle

            return compact(guidance_bundle(assessment.to_dict()))
        return str(assessment.to_json())

    def line(self, name: str, number: int, raw: bytes | None) -> Output | None:
        """The output for one input line, or None for a blank line (skipped).

        Whatever goes wrong with one line (bad input, an engine failure, a bug) becomes an
        error record in its place: one document can never end the batch.
        """
        from ..errors import CdssError, PatientDataError

        try:
            document = _parse_line(raw)
            if document is BLANK:
                return None
            try:
                assessment = self.rules.evaluate(with_fhir_options(document, self.rules, self.allow_in_progress),
                                                 trace=self.trace)
                data = self.render(assessment).encode("utf-8")  # fails here, for this line, not in the writer
            except PatientDataError as error:
                raise patient_problem(error, document) from None
        except InputProblem as problem:
            return error_output(name, number, problem)
        except (CdssError, Exception) as error:  # noqa: BLE001 - isolate the line, report it in place
            return error_output(name, number, not_evaluated(error), FAILED)
        return data, assessment.urgency, None

    def evaluate_chunk(self, lines: list[Line]) -> list[Output]:
        """Output lines for a chunk of input lines (blank lines skipped), in order: the one unit of
        work of a worker process. Every parsed document goes through one `RuleSet.evaluate_many`
        call, so the engine shares a session per chunk of patients; each output equals `line()`'s.
        If the chunk as a whole fails (an engine error, a bug), its lines are evaluated one by one,
        so that only the line at fault becomes an error record."""
        from ..errors import PatientDataError

        slots: list[Output | _Parsed] = []  # per non-blank line: its error Output, or its parsed document
        for name, number, raw in lines:
            try:
                document = _parse_line(raw)
                if document is BLANK:
                    continue
                try:
                    slots.append(_Parsed(name, number, raw, document,
                                         with_fhir_options(document, self.rules, self.allow_in_progress)))
                except PatientDataError as error:
                    raise patient_problem(error, document) from None
            except InputProblem as problem:
                slots.append(error_output(name, number, problem))
            except Exception:  # noqa: BLE001 - the one-line path isolates and reports it
                slots.append(_Parsed(name, number, raw, None, None, alone=True))
        try:
            results = list(self.rules.evaluate_many([s.evaluated for s in slots
                                                     if isinstance(s, _Parsed) and not s.alone], trace=self.trace))
        except Exception:  # noqa: BLE001 - find the line at fault, one line at a time
            return [out for out in (self.line(*item) for item in lines) if out is not None]
        outputs = iter(results)
        out: list[Output] = []
        for slot in slots:
            if not isinstance(slot, _Parsed):
                out.append(slot)
                continue
            if slot.alone:
                one = self.line(slot.name, slot.number, slot.raw)
                if one is not None:
                    out.append(one)
                continue
            result = next(outputs)
            try:
                if isinstance(result, PatientDataError):
                    raise result
                # --format fhir may refuse a patient_id FHIR cannot carry; encoding fails here, for this line
                out.append((self.render(result).encode("utf-8"), result.urgency, None))
            except PatientDataError as error:
                problem = patient_problem(error, slot.document)
                out.append(error_output(slot.name, slot.number, problem))
            except Exception as error:  # noqa: BLE001 - isolate the line, report it in place
                out.append(error_output(slot.name, slot.number, not_evaluated(error), FAILED))
        return out


class _Parsed:
    """A line parsed into a document, waiting for its result."""

    __slots__ = ("name", "number", "raw", "document", "evaluated", "alone")

    def __init__(self, name: str, number: int, raw: Any, document: Any, evaluated: Any, alone: bool = False) -> None:
        self.name, self.number, self.raw, self.document = name, number, raw, document
        self.evaluated = evaluated  # what is evaluated: the document, or the patient a FHIR response converts to
        self.alone = alone  # preparing it failed unexpectedly: evaluated by `line()`, which reports why


def write_all(out: BinaryIO, data: bytes) -> None:
    """Write every byte: a signal arriving while a pipe is full makes BufferedWriter.write
    return early with a partial count (measured: 131,072 of 262,144 bytes), which would leave
    a half line at the end of an interrupted batch."""
    view = memoryview(data)
    while view:
        written = out.write(view)
        view = view[written if written is not None else len(view):]


def not_evaluated(error: BaseException, what: str = "the evaluation failed") -> InputProblem:
    """An error record for a line that is valid input but could not be evaluated."""
    from ..errors import printable

    found = printable(f"{what}: {type(error).__name__}: {error}")[:300]
    return InputProblem("$", "a document the rule engine can evaluate", found,
                        f"not evaluated ({found}); this is a bug in cdss, please report it")


def worker_died(line: int | None = None) -> InputProblem:
    found = "the worker process evaluating it died or failed, twice"
    return InputProblem("$", "a document the rule engine can evaluate", found,
                        f"not evaluated: {found}; this is a bug in cdss, please report it")


_worker: Evaluator | None = None
_shared: Any = None  # in a worker: the parent's shared-memory slots (see `Slots`), or None


def _init_worker(loaded: LoadedRules, overrides: Mapping[str, Any], trace: bool, fmt: str,
                 allow_in_progress: bool = False, shared: Any = None) -> None:
    """Worker start: Ctrl-C and SIGTERM are for the parent, which ends the batch cleanly and
    stops its workers itself (a worker that handled them would print a traceback)."""
    global _worker, _shared
    _shared = shared
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    from ..engine import tune_allocator
    from ..ruleset import RuleSet

    tune_allocator()
    _worker = Evaluator(RuleSet(loaded, overrides), trace=trace, fmt=fmt, allow_in_progress=allow_in_progress)


Packed = tuple[str, int, bytes]
"""Consecutive whole lines of one input as one bytes object: input name, number of the first line,
the lines (each ends with a newline, except perhaps the input's last)."""


def pack(chunk: list[Line]) -> list[Line] | Packed:
    """A chunk as one bytes object when it can be (consecutive lines of one input, all read):
    one object to pickle and unpickle instead of a tuple per line. Anything else is sent as is."""
    name, first, _ = chunk[0]
    last = len(chunk) - 1
    raws: list[bytes] = []
    for index, (where, number, raw) in enumerate(chunk):
        if where != name or number != first + index or not isinstance(raw, bytes) \
                or (index != last and not raw.endswith(b"\n")):
            return chunk
        raws.append(raw)
    return name, first, b"".join(raws)


def unpack(work: list[Line] | Packed) -> list[Line]:
    """The lines `iter_lines` would read from the packed bytes: it ends a line only at a newline,
    so splitting there (keeping it) gives back the same bytes; a line it would report as over
    the size cap (`_oversized`) is None here too."""
    if isinstance(work, list):
        return work
    name, first, data = work
    parts = data.split(b"\n")
    raws: list[bytes | None] = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        raws.append(parts[-1])
    return [(name, first + index, None if _oversized(raw) else raw)  # type: ignore[arg-type]
            for index, raw in enumerate(raws)]


def _oversized(raw: bytes) -> bool:
    """What `iter_lines` (readline(MAX_DOCUMENT_BYTES + 1)) reports as an oversized line."""
    return len(raw) > MAX_DOCUMENT_BYTES + 1 or (len(raw) == MAX_DOCUMENT_BYTES + 1 and not raw.endswith(b"\n"))


def chunks(inputs: Iterable[tuple[str, BinaryIO | Exception]], size: Sizer) -> Iterator[list[Line] | Packed]:
    """The work of a parallel batch, in input order, sized by `size` as it learns. A regular file
    is read in blocks of whole lines (`_blocks`): the parent never looks at single lines. A pipe
    or terminal is read line by line (`read_lines`), `size.lines` lines per chunk."""
    for name, stream in inputs:
        if not isinstance(stream, Exception) and _regular(stream):
            yield from _blocks(name, stream, size)
            continue
        lines = read_lines([(name, stream)])
        while True:
            chunk = list(itertools.islice(lines, size.lines))
            if not chunk:
                break
            yield pack(chunk)


def _blocks(name: str, stream: BinaryIO, size: Sizer) -> Iterator[list[Line] | Packed]:
    """A regular file as packed chunks of about `size.input_bytes`, each ending at a line end:
    one read and, unless the block happens to end a line, one bounded readline per chunk. The
    lines the worker unpacks are those `iter_lines` reads (an oversized line included); a line
    too long to hold is skipped here as `iter_lines` skips it and sent as an oversized line."""
    number = 0  # lines sent so far
    while True:
        try:
            data = stream.read(size.input_bytes)
            if not data:
                return
            if not data.endswith(b"\n"):
                rest = stream.readline(MAX_DOCUMENT_BYTES + 2)
                if len(rest) > MAX_DOCUMENT_BYTES + 1 and not rest.endswith(b"\n"):  # over the cap: skip it
                    head = data[:data.rfind(b"\n") + 1]
                    if head:
                        yield name, number + 1, head
                        number += head.count(b"\n")
                    while True:
                        rest = stream.readline(MAX_DOCUMENT_BYTES)
                        if not rest or rest.endswith(b"\n"):
                            break
                    number += 1
                    yield [(name, number, None)]
                    continue
                data += rest
        except OSError as error:
            yield [(name, number + 1, unreadable(error))]  # type: ignore[list-item]
            return
        yield name, number + 1, data
        number += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)


def _input_bytes(work: list[Line] | Packed) -> int:
    if isinstance(work, tuple):
        return len(work[2])
    return sum(len(raw) for _, _, raw in work if isinstance(raw, bytes))


def _run_chunk(message: tuple[list[Line] | Packed, int | None]) -> Block:
    """A chunk's Block; its output is left in shared-memory slot `slot` when there is one and it
    fits, and only the counts travel back."""
    work, slot = message
    assert _worker is not None, "worker not initialised"
    outputs = _worker.evaluate_chunk(unpack(work))
    settle_garbage()
    if slot is not None and _shared is not None:
        length = _fill(_shared, slot * SLOT_BYTES, outputs)
        if length is not None:
            block = Block(outputs, data=b"")
            block.shared = length
            return block
    return Block(outputs)


def _fill(memory: Any, start: int, outputs: list[Output]) -> int | None:
    """Write the output lines straight into memory[start:start + SLOT_BYTES] and return their length,
    or None if they do not fit. Measured: joining the lines into one bytes object and copying that
    into the slot was two extra copies of all 200 MB of results (40,000 patients) in the workers."""
    limit = start + SLOT_BYTES
    end = start
    for data, _, _ in outputs:
        begin, end = end, end + len(data) + 1
        if end > limit:
            return None
        memory[begin:end - 1] = data
        memory[end - 1] = 10  # newline
    return end - start


class Slots:
    """Shared memory for the outputs of the chunks in flight, one SLOT_BYTES slot each: an
    anonymous MAP_SHARED mapping made before the workers fork (if it cannot be made, every output
    travels in its result message). The parent gives a chunk a
    free slot when it sends it, writes the output from the slot, and only then frees the slot.
    A worker that dies leaves at most a half-written slot that nobody reads: its chunk is
    retried without shared memory."""

    def __init__(self, count: int) -> None:
        import mmap

        try:
            self.memory: Any = mmap.mmap(-1, count * SLOT_BYTES)
        except (OSError, ValueError):
            self.memory = None
        self.free = collections.deque(range(count)) if self.memory is not None else collections.deque()
        self.count = count

    def take(self) -> int | None:
        return self.free.popleft() if self.free else None

    def give(self, slot: int | None) -> None:
        if slot is not None:
            self.free.append(slot)

    def read(self, block: Block, slot: int | None) -> Block:
        """The block with its data: a view of its slot if the worker left it there."""
        if block.shared is not None:
            if slot is None or self.memory is None:
                raise Lost  # cannot happen: a worker used a slot it was not given
            block.data = memoryview(self.memory)[slot * SLOT_BYTES:slot * SLOT_BYTES + block.shared]
        return block


def read_lines(inputs: Iterable[tuple[str, BinaryIO | Exception]], live: set[str] | None = None) -> Iterator[Line]:
    """Every line of every input; an input that cannot be opened or read yields one error line
    (an InputProblem in place of the bytes) and the next input is still read. The names of
    inputs that are not regular files (pipes, terminals: lines may arrive one at a time) are
    added to `live` before their first line."""
    for name, stream in inputs:
        if isinstance(stream, Exception):
            yield name, 0, unreadable(stream)  # type: ignore[misc]
            continue
        if live is not None and not _regular(stream):
            live.add(name)
        number = 0
        try:
            for number, raw in iter_lines(stream):
                yield name, number, raw
        except OSError as error:
            yield name, number + 1, unreadable(error)  # type: ignore[misc]


def _regular(stream: Any) -> bool:
    import os
    import stat

    try:
        return stat.S_ISREG(os.fstat(stream.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


def unreadable(error: Exception) -> InputProblem:
    from ..errors import printable

    reason = printable(getattr(error, "strerror", None) or getattr(error, "message", None) or str(error))
    return InputProblem("$", "a readable file", "a file that cannot be read", f"cannot read: {reason}")


T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter); itertools.batched from 3.12 on."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class Stop:
    """SIGINT / SIGTERM during a batch: remembered here and acted on between writes, so every
    written line is complete; the batch then ends with exit 130 / 143."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> Stop:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._saved[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signum

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    @property
    def exit_code(self) -> int:
        return 128 + (self.signal or 0)


WINDOW_PER_WORKER = 8
"""Chunks in flight per worker (sent, queued in the pool, or done and waiting for their turn to be
written). Two are in a worker at a time (`pool.DEPTH`); the others let the workers that are not
slowed down go on while the chunk at the head of the output is late (a core taken for a while by
another process). On the 2-core test machine 3 and 8 measured the same (docs/SPEED.md); the
cost is memory: 8N chunks of input and 8N shared slots, of which only the pages used are touched."""
CHUNK_TIMEOUT_SECONDS = 300.0
"""A chunk of 256 lines takes well under a second; one that takes minutes means a stuck worker."""


def _pool(workers: int, initargs: tuple[Any, ...], shared: Any = None) -> Any:
    """A thread-free pool (`pool.Pool`) of forked workers, each with its own rule set, evaluating chunks."""
    from .pool import Pool

    return Pool(workers, lambda: _init_worker(*initargs, shared), _run_chunk, timeout=CHUNK_TIMEOUT_SECONDS)


def parallel(inputs: Iterable[tuple[str, BinaryIO | Exception]], rules: RuleSet, *, workers: int, trace: bool,
             fmt: str, stop: Stop | None = None, allow_in_progress: bool = False) -> Generator[Block, None, None]:
    """Outputs in input order from `workers` processes, each loading the rule set once.

    A worker that dies takes the chunks it held with it: the pool starts another worker and
    each of those chunks is retried once, line by line, in a fresh single-worker pool, so only a line
    that kills its worker again becomes an error record. Nothing waits forever.
    """
    stop = stop or Stop()
    overrides = {name: value for name, value in rules.parameter_values.items()
                 if value != rules.parameters[name].default}
    initargs = (rules.loaded, overrides, trace, fmt, allow_in_progress)
    window = workers * WINDOW_PER_WORKER
    slots = Slots(window)
    pool = _pool(workers, initargs, slots.memory)
    pending: collections.deque[tuple[list[Line] | Packed, Any, int | None]] = collections.deque()
    size = Sizer()
    work = chunks(inputs, size)

    def stopped() -> bool:
        return stop.signal is not None

    try:
        exhausted = False
        while pending or not exhausted:
            while not exhausted and len(pending) < window and not stopped():
                chunk = next(work, None)
                if chunk is None:
                    exhausted = True
                else:
                    slot = slots.take()
                    pending.append((chunk, pool.submit((chunk if isinstance(chunk, tuple) else pack(chunk), slot)),
                                    slot))
            if not pending:
                break
            chunk, task, slot = pending.popleft()
            try:
                block = slots.read(pool.wait(task, stopped), slot)
            except Lost:  # its worker died (the pool starts another) or is stuck: retry the lines
                yield from _retry_lines(chunk, initargs, stop)
                slots.give(slot)  # the worker that had it is dead and reaped: nobody writes there now
                continue
            size.learn(block, _input_bytes(chunk))
            yield block  # written out before this generator resumes
            slots.give(slot)
    except Stopped:
        return
    finally:
        pool.kill()


class Sizer:
    """Lines per chunk for about BLOCK_BYTES of output, from the blocks already back (the output
    per line depends on the format, --explain and the patients). Only speed depends on it: each
    output line is the same whatever chunk it is evaluated in."""

    def __init__(self) -> None:
        self.lines = FIRST_CHUNK_LINES
        self.input_bytes = FIRST_CHUNK_BYTES
        self.records = 0
        self.read = 0
        self.data = 0

    def learn(self, block: Block, input_bytes: int = 0) -> None:
        self.records += block.records
        self.read += input_bytes
        self.data += len(block.data)
        if self.data:
            self.lines = max(MIN_CHUNK_LINES, min(CHUNK_LINES, BLOCK_BYTES * self.records // self.data))
            if self.read:
                self.input_bytes = max(MIN_CHUNK_BYTES, min(MAX_CHUNK_BYTES, BLOCK_BYTES * self.read // self.data))


def _retry_lines(chunk: list[Line] | Packed, initargs: tuple[Any, ...], stop: Stop) -> Generator[Block, None, None]:
    """Second try for the lines of a chunk whose worker died: one line at a time in a pool of one
    worker (replaced after each death); a line that kills a worker again becomes an error record."""
    pool = _pool(1, initargs)
    try:
        for name, number, raw in unpack(chunk):
            try:
                yield pool.wait(pool.submit(([(name, number, raw)], None)), lambda: stop.signal is not None)
            except Lost:
                yield Block([error_output(name, number, worker_died(), FAILED)])
    finally:
        pool.kill()


def settle_garbage() -> None:
    """After a chunk, in the CLI's batch (`run` undoes it at the end when it ran inside another
    program) or in one of its workers: collect this chunk's cyclic garbage (an invalid line's error
    makes some), then freeze what is left, so the collector never walks it again. What is left is mostly the rule set's memos, which grow with every new
    kind of patient; the collector's repeated passes over them were 11-15 % of a 40,000-line run
    (measured: 2.75 s with the collector as it is, 2.35 s without it). A valid document makes no
    cycle (a test checks), and freezing keeps nothing alive: a frozen object is still freed when its
    last reference goes, as when a full memo is emptied."""
    gc.collect()  # only what is not frozen yet: what this chunk made and kept
    gc.freeze()


def sequential(lines: Iterator[Line], rules: RuleSet, *, trace: bool, fmt: str, stop: Stop | None = None,
               allow_in_progress: bool = False, live: set[str] | None = None) -> Generator[Block, None, None]:
    """In this process, `BATCH_SIZE` lines of a file at a time (one engine session per chunk);
    lines of the inputs named in `live` (pipes, terminals) one at a time."""
    from ..ruleset import BATCH_SIZE

    evaluator = Evaluator(rules, trace=trace, fmt=fmt, allow_in_progress=allow_in_progress)
    chunk: list[Line] = []
    for item in lines:
        if stop is not None and stop.signal is not None:
            return
        chunk.append(item)
        # a line from a pipe or terminal is answered at once: the next one may be minutes away
        if len(chunk) >= BATCH_SIZE or (live is not None and item[0] in live):
            outputs = evaluator.evaluate_chunk(chunk)
            chunk = []
            settle_garbage()
            if outputs:
                yield Block(outputs)
    if chunk and not (stop is not None and stop.signal is not None):
        outputs = evaluator.evaluate_chunk(chunk)
        settle_garbage()
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
    frozen = gc.get_freeze_count()  # a program that runs the CLI in-process (click's CliRunner) gets its heap back
    try:
        with Stop() as stop:
            code = _run(inputs, rules, out=out, workers=workers, trace=trace, fmt=fmt, err=err, stop=stop,
                        allow_in_progress=allow_in_progress)
    finally:
        if not frozen:  # one that froze objects itself keeps them frozen, as with the pool (pool.py)
            gc.unfreeze()
    if stop.signal is not None:
        err.write("cdss: interrupted; every line written is complete\n")
        err.flush()
        return stop.exit_code
    return code


def _run(inputs: Iterable[tuple[str, BinaryIO]], rules: RuleSet, *, out: BinaryIO, workers: int, trace: bool,
         fmt: str, err: IO[str], stop: Stop, allow_in_progress: bool = False) -> int:
    import os

    live: set[str] = set()
    parallel_ok = workers > 1 and hasattr(os, "fork")  # the pool forks its workers; without fork (Windows): one process
    if workers > 1 and not parallel_ok:
        err.write(f"cdss: note: --workers {workers} needs os.fork, which this platform lacks; "
                  "evaluating in one process\n")
    blocks = (parallel(inputs, rules, workers=workers, trace=trace, fmt=fmt, stop=stop, allow_in_progress=allow_in_progress)
              if parallel_ok else sequential(read_lines(inputs, live), rules, trace=trace, fmt=fmt, stop=stop,
                                             allow_in_progress=allow_in_progress, live=live))
    counts = dict.fromkeys(URGENCIES, 0)
    errors = failed = 0
    first_errors: list[str] = []
    total = unflushed = 0
    progress = Progress(err)
    try:
        for block in blocks:
            if stop.signal is not None:
                break
            write_all(out, block.data)
            total += block.records
            unflushed += block.records
            errors += block.errors
            failed += block.failed
            first_errors.extend(block.first_errors[:SHOWN_ERRORS - len(first_errors)])
            for urgency, n in block.counts.items():
                counts[urgency] += n
            if unflushed >= CHUNK_LINES:
                out.flush()
                unflushed = 0
            progress.update(total)
    finally:
        blocks.close()  # stops the workers now, not at garbage collection
        progress.done()
        out.flush()
    if stop.signal is not None:
        return stop.exit_code
    evaluated = sum(counts.values())
    by_urgency = ", ".join(f"{counts[u]:,} {u}" for u in URGENCIES)
    summary = (f"cdss: {total:,} record{'s' if total != 1 else ''}: {evaluated:,} evaluated ({by_urgency}), "
               f"{errors:,} invalid")
    if errors:
        more = errors - len(first_errors)
        summary += f" (at {', '.join(first_errors)}{f' and {more:,} more' if more else ''})"
    err.write(summary + "\n")
    err.flush()
    if failed:
        err.write(f"cdss: error: the rule engine failed on {failed:,} line{'s' if failed != 1 else ''} (error records "
                  f"in place); this is a bug in cdss: please report it\n")
        err.flush()
        return 4
    return 1 if errors else 0
