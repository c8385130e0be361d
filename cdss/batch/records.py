"""One input record in, one output record out: the same bytes as `cdss evaluate --jsonl`.

Everything the Dask job and the DataFrame adapter write comes from `evaluate_partition`.
It parses and evaluates with the very functions the local batch uses (`cdss.cli.input`
for strict parsing, `cdss.cli.batch.error_record` for error records), so an output line
here is byte-identical to `cdss evaluate --jsonl` for the same input line, and an invalid
document becomes an error record in its place (file and line or row), never a gap.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Union

if TYPE_CHECKING:
    from ..ruleset import RuleSet
    from ..result import Assessment

Row = Union[bytes, str, Mapping[str, Any], None]
"""One input: raw JSON text (bytes or str, parsed strictly) or an already parsed document."""


class Outcome(NamedTuple):
    """The output for one input record, plus the flat fields the summary and Parquet output need.

    (A NamedTuple, not a dataclass: one is made per patient, and that is measurably cheaper.)
    """

    json: str
    """The output line (no newline): the result document, or the error record."""
    file: str
    position: int
    """Line number (JSON Lines) or row number (Parquet, DataFrames), counted from 1."""
    patient_id: str | None = None
    urgency: str | None = None
    red_flag_screening: str | None = None
    plan_status: str | None = None
    rules: tuple[str, ...] = ()
    """Ids of the rules named in the result (findings and cards), sorted."""
    error: str | None = None
    """The error message of an invalid record; None for a result."""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.position}"


def _evaluate(rules: RuleSet, documents: Sequence[Any]) -> list[Assessment | Exception]:
    """Evaluate documents in order; the exception of a document that fails is returned in its place.

    The one seam to the core: one `RuleSet.evaluate_many` call (issue 15: the documents share
    durable-rules sessions, 64 at a time; the same results). Should the batch call fail as a
    whole (an engine error, a bug), the documents are evaluated one at a time, so only the one
    that fails becomes an error record, as in `cdss evaluate --jsonl`: a population run goes on.
    """
    try:
        return list(rules.evaluate_many(documents))
    except Exception:  # noqa: BLE001 - found again, document by document, below
        pass
    out: list[Assessment | Exception] = []
    for document in documents:
        try:
            out.append(rules.evaluate(document))
        except Exception as error:  # noqa: BLE001 - isolate the document, report it in place
            out.append(error)
    return out


def _result(assessment: Assessment, file: str, position: int, document: Mapping[str, Any], kind: str) -> Outcome:
    text = str(assessment.to_json())
    patient_id = document.get("patient_id")
    status = _PLAN_STATUS.search(text)
    return Outcome(json=text, file=file, position=position,
                   patient_id=patient_id if isinstance(patient_id, str) else None,
                   urgency=assessment.urgency, red_flag_screening=assessment.red_flag_screening,
                   plan_status=status.group(1) if status else None, rules=_named_rules(text))


# Read from the compact JSON text rather than from `Assessment.findings` / `.cards` / `.plan`:
# those return deep copies, which cost more than the evaluation itself. In compact JSON a
# `"` inside a string is always escaped, so `"rule":"` only matches a real "rule" key (in
# findings and cards); the tests compare both readings on every generated result.
_RULE_KEY = '"rule":"'


def _named_rules(text: str) -> tuple[str, ...]:
    """Sorted ids of the rules named by a "rule" key in a result's compact JSON (rule ids are slugs)."""
    parts = text.split(_RULE_KEY)
    if len(parts) == 1:
        return ()
    return tuple(sorted({part[: part.index('"')] for part in parts[1:]}))


_PLAN_STATUS = re.compile(r'"plan":\{"status":"([^"\\]*)"')


def _error(problem: Any, file: str, position: int, kind: str) -> Outcome:
    if kind == "line":
        from ..cli.batch import error_record

        text = error_record(file, position, problem)
    else:  # a table row: the same record with "row" for "line"
        from ..result import compact

        text = compact({"file": file, "row": position, "error": problem.record()})
    return Outcome(json=text, file=file, position=position, error=problem.message)


def evaluate_partition(rows: Iterable[Row], rules: RuleSet, *, file: str = "<input>", first: int = 1,
                       kind: str = "line", skip_blank: bool | None = None, batch: int = 256) -> Iterator[Outcome]:
    """Evaluate `rows` in order, yielding one Outcome per record (an error record for an invalid one).

    `rows`: raw JSON text (bytes or str, parsed as strictly as `cdss evaluate`), parsed
    documents (dicts), or None (a missing value: an error record). `file` and `first`
    (the number of the first row) name records in error records; `kind` is "line" for
    JSON Lines (blank lines are then skipped, as `cdss evaluate --jsonl` does, but still
    counted) or "row" for tables (every row gives a record).
    """
    from ..cli.batch import not_evaluated
    from ..cli.input import InputProblem, oversized_line, parse_document, patient_problem
    from ..errors import PatientDataError

    if skip_blank is None:
        skip_blank = kind == "line"
    pending: list[tuple[int, Any]] = []  # (position, parsed document), or an Outcome already made
    queue: list[Outcome | int] = []

    def flush() -> Iterator[Outcome]:
        results = _evaluate(rules, [doc for _, doc in pending])
        by_position = dict(zip((pos for pos, _ in pending), zip(results, (doc for _, doc in pending))))
        for item in queue:
            if isinstance(item, Outcome):
                yield item
                continue
            result, document = by_position[item]
            if isinstance(result, PatientDataError):
                yield _error(patient_problem(result, document), file, item, kind)
            elif isinstance(result, Exception):  # valid input the engine could not evaluate: a bug, said in place
                yield _error(not_evaluated(result), file, item, kind)
            else:
                yield _result(result, file, item, document, kind)
        pending.clear()
        queue.clear()

    position = first - 1
    for row in rows:
        position += 1
        try:
            if row is None:
                if kind == "line":
                    raise oversized_line()  # iter_lines gives None for a line over the size cap
                raise InputProblem("$", "a patient document (JSON text)", "null (no value in this row)",
                                   "$: expected a patient document (JSON text), found null (no value in this row)")
            if isinstance(row, Mapping):
                document: Any = row
            else:
                raw = row.encode("utf-8", "surrogatepass") if isinstance(row, str) else bytes(row)
                if skip_blank and not raw.strip():
                    continue
                document = parse_document(raw, single_line=kind == "line")
        except InputProblem as problem:
            queue.append(_error(problem, file, position, kind))
            continue
        pending.append((position, document))
        queue.append(position)
        if len(pending) >= batch:
            yield from flush()
    if queue:
        yield from flush()
