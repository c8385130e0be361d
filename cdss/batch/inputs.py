"""Input partitions: where each one starts and ends, planned on the client, read on a worker.

A partition is a plain, picklable description (file, byte range or row range, number of the
first line), so the client never ships patient data to workers: each worker reads its own
slice. Plain JSON Lines files are cut at line boundaries every `lines` lines (one scan of the
file, counting newlines, which also gives the input count the summary is checked against);
a `.gz` file cannot be entered in the middle, so it is one partition (split big files before
compressing them); a Parquet file is cut by row groups and, inside big row groups, by rows.
"""

from __future__ import annotations

import gzip
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .records import Row

BLOCK = 4 * 1024 * 1024
DEFAULT_COLUMN = "document"


class InputError(Exception):
    """An input that cannot be planned (unreadable, wrong Parquet column): a usage error."""


@dataclass(frozen=True, slots=True)
class Partition:
    """One slice of one input file; its output is one file named `name`."""

    name: str
    """Output file stem: `<input index>-<input file stem>-<partition index>`."""
    path: str
    """The input file, as given on the command line (error records name it so)."""
    kind: str
    """"jsonl", "jsonl.gz" or "parquet"."""
    first: int
    """Number of the first line / row of this slice (from 1)."""
    count: int
    """Lines / rows in this slice (blank lines included)."""
    start: int = 0
    """JSON Lines: byte offset; Parquet: row group index."""
    end: int = -1
    """JSON Lines: byte offset of the end (-1: end of file); Parquet: row offset in the row group."""
    location: str = ""
    """The absolute path workers open (the client's working directory may not be theirs)."""

    @property
    def file(self) -> str:
        return self.location or self.path


def kind_of(path: str) -> str:
    lower = path.lower()
    if lower.endswith(".parquet") or lower.endswith(".parq") or lower.endswith(".pq"):
        return "parquet"
    if lower.endswith(".gz"):
        return "jsonl.gz"
    return "jsonl"


def _stem(path: str) -> str:
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".ndjson", ".json", ".parquet", ".parq", ".pq"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "input"


def _line_cuts(stream: BinaryIO, lines: int) -> Iterator[tuple[int, int]]:
    """(byte offset, lines so far) after every `lines` lines, and at the end: one pass, blocks only."""
    offset = total = 0
    while True:
        block = stream.read(BLOCK)
        if not block:
            break
        here = 0
        count = block.count(b"\n")
        while total + count >= lines * (total // lines + 1) and count:
            need = lines * (total // lines + 1) - total  # newlines to the next cut
            at = here
            for _ in range(need):
                at = block.index(b"\n", at) + 1
            count -= block.count(b"\n", here, at)
            total += need
            here = at
            yield offset + at, total
        total += count
        offset += len(block)
        last = block[-1:]
    if offset and last != b"\n":  # a last line without a newline is still a line
        total += 1
    yield offset, total


def plan_jsonl(index: int, path: str, lines: int) -> list[Partition]:
    stem = f"{index:03d}-{_stem(path)}"
    try:
        if kind_of(path) == "jsonl.gz":
            with gzip.open(path, "rb") as stream:
                total = list(_line_cuts(stream, 1 << 62))[-1][1]
            return [Partition(f"{stem}-00000", path, "jsonl.gz", 1, total, location=os.path.abspath(path))]
        with open(path, "rb") as stream:
            cuts = list(_line_cuts(stream, lines))
    except (OSError, EOFError, gzip.BadGzipFile) as error:
        raise InputError(f"{path}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
    parts = []
    start, done = 0, 0
    for offset, total in cuts:
        if offset == start and parts:
            continue
        parts.append(Partition(f"{stem}-{len(parts):05d}", path, "jsonl", done + 1, total - done, start, offset,
                               os.path.abspath(path)))
        start, done = offset, total
    return parts


def plan_parquet(index: int, path: str, lines: int, column: str) -> list[Partition]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as error:
        raise InputError(f"{path}: cannot read it as Parquet ({error})") from None
    schema = meta.schema_arrow
    if column not in schema.names:
        raise InputError(f"{path}: no column '{column}' (columns: {', '.join(schema.names)}); "
                         "give the column holding the patient document's JSON text with --column")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind)
            or pa.types.is_large_binary(kind)):
        raise InputError(f"{path}: column '{column}' holds {kind}; expected JSON text (string or binary), "
                         "one patient document per row")
    stem = f"{index:03d}-{_stem(path)}"
    parts = []
    row = 1
    for group in range(meta.metadata.num_row_groups):
        size = meta.metadata.row_group(group).num_rows
        for offset in range(0, size, lines):
            count = min(lines, size - offset)
            parts.append(Partition(f"{stem}-{len(parts):05d}", path, "parquet", row, count, group, offset,
                                   os.path.abspath(path)))
            row += count
    return parts


class _Slice(io.RawIOBase):
    """The bytes [start, end) of a file, as a stream (so `iter_lines` caps line length as usual)."""

    def __init__(self, stream: BinaryIO, start: int, end: int) -> None:
        self._stream = stream
        stream.seek(start)
        self._left = end - start

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._left <= 0:
            return 0
        view = memoryview(buffer)[: self._left]
        n = self._stream.readinto(view)  # type: ignore[attr-defined]
        self._left -= n or 0
        return n or 0


def read_rows(part: Partition, column: str = DEFAULT_COLUMN) -> Iterator[Row]:
    """The raw records of a partition, in order (None for a line over the size cap / a null cell)."""
    from ..cli.input import iter_lines

    if part.kind == "parquet":
        import pyarrow.parquet as pq

        table = pq.ParquetFile(part.file).read_row_group(part.start, columns=[column])
        yield from table.column(0).slice(part.end, part.count).to_pylist()
        return
    if part.kind == "jsonl.gz":
        with gzip.open(part.file, "rb") as stream:
            for _, raw in iter_lines(stream):
                yield raw
        return
    with open(part.file, "rb", buffering=0) as raw_file:
        stream = io.BufferedReader(_Slice(raw_file, part.start, part.end), BLOCK)  # type: ignore[arg-type]
        for _, raw in iter_lines(stream):
            yield raw


def file_identity(path: str) -> dict[str, Any]:
    """What `--resume` compares to know an input is unchanged: name, size, modification time."""
    stat = os.stat(path)
    return {"path": path, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
