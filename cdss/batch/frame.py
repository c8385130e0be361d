"""pandas DataFrame in, DataFrame out: the adapter for `dask.dataframe.map_partitions` and Spark `mapInPandas`.

The output has a declared, fixed schema (`OUTPUT_COLUMNS`, `arrow_schema()`, `SPARK_SCHEMA`,
`meta()`), the same columns the Parquet output of `cdss batch` has, so a frame from either
path can be concatenated with the other. The rule set is given as a `RuleSource` (path +
parameters, a few bytes to pickle) and loaded once per process, not once per partition.
"""

from __future__ import annotations

import threading
from pathlib import Path
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .records import Outcome, evaluate_partition

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from ..ruleset import RuleSet

OUTPUT_COLUMNS: tuple[tuple[str, str, str], ...] = (
    # name, arrow / pandas type, meaning
    ("file", "string", "input file (or the frame's `file` column)"),
    ("row", "int64", "line (JSON Lines) or row number (tables), from 1"),
    ("patient_id", "string", "the document's patient_id, if any"),
    ("urgency", "string", "emergency | see-professional | self-care | none; null for an error record"),
    ("red_flag_screening", "string", "the result's red_flag_screening; null for an error record"),
    ("plan_status", "string", "the result's plan.status; null for an error record"),
    ("rules", "list<string>", "ids of the rules named in the result (findings, cards), sorted"),
    ("error", "string", "the error message of an invalid record; null for a result"),
    ("result", "string", "the whole output line: the result document, or the error record (as cdss evaluate --jsonl)"),
)

SPARK_SCHEMA = ("file string, row long, patient_id string, urgency string, red_flag_screening string, "
                "plan_status string, rules array<string>, error string, result string")
"""The output schema as a Spark DDL string, for `DataFrame.mapInPandas(function, SPARK_SCHEMA)`."""


def arrow_schema() -> pa.Schema:
    """The output schema as a pyarrow schema (also the schema of `cdss batch --format parquet` files)."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "list<string>": pa.list_(pa.string())}
    return pa.schema([pa.field(name, types[kind]) for name, kind, _ in OUTPUT_COLUMNS])


def to_arrow(outcomes: Iterable[Outcome]) -> pa.Table:
    import pyarrow as pa

    items = list(outcomes)
    columns = {
        "file": [o.file for o in items], "row": [o.position for o in items],
        "patient_id": [o.patient_id for o in items], "urgency": [o.urgency for o in items],
        "red_flag_screening": [o.red_flag_screening for o in items], "plan_status": [o.plan_status for o in items],
        "rules": [list(o.rules) for o in items], "error": [o.error for o in items], "result": [o.json for o in items],
    }
    return pa.Table.from_pydict(columns, schema=arrow_schema())


def meta() -> pd.DataFrame:
    """An empty frame with the output dtypes: the `meta=` of `dask.dataframe.map_partitions`."""
    return arrow_schema().empty_table().to_pandas()


@dataclass(frozen=True)
class RuleSource:
    """Where to load a rule set from (None: the bundled one) and the parameter overrides.

    Picklable and small: ship this to workers, and each process loads the rule set once
    (`rules()`), checking it is the one the client saw when `digest` is given.
    """

    path: str | None = None
    parameters: Mapping[str, Any] = field(default_factory=dict)
    digest: str | None = None

    def key(self) -> tuple[Any, ...]:
        return self.path, tuple(sorted((k, str(v)) for k, v in self.parameters.items())), self.digest

    def rules(self) -> RuleSet:
        """The rule set, loaded on first use in this process and kept."""
        key = self.key()
        rules = _loaded.get(key)
        if rules is None:
            with _lock:
                rules = _loaded.get(key)
                if rules is None:
                    rules = _loaded[key] = self._load()
                    loads[key] = loads.get(key, 0) + 1
        return rules

    def _load(self) -> RuleSet:
        from ..cli import cache
        from ..engine import tune_allocator
        from ..ruleset import RuleSet

        _tune_allocator_under_dask(tune_allocator)
        # the CLI's rule-set cache skips the JSON Schema pass for rule files already checked (the client
        # just loaded them): a worker starts faster; every other check still runs
        rules = RuleSet(cache.load(Path(self.path) if self.path is not None else None), dict(self.parameters))
        if self.digest is not None and rules.info.digest != self.digest:
            raise RuntimeError(
                f"the rule set at {self.path or '(bundled)'} on this worker has digest {rules.info.digest}, "
                f"not {self.digest} as on the client: give every worker the same rule files")
        return rules


DASK_MALLOC_TRIM = "65536"


def _tune_allocator_under_dask(tune: Any) -> None:
    """`engine.tune_allocator()`, also in a Dask worker: 2-3x faster evaluations (measured here).

    Dask's nanny starts every worker with MALLOC_TRIM_THRESHOLD_=65536 (its default
    `distributed.nanny.pre-spawn-environ`), which `tune_allocator` takes for a user's choice
    and respects; with it, every evaluation trims and regrows the heap. That value is Dask's
    default, not the operator's: tune anyway. Any other MALLOC_* setting is still left alone.
    """
    import os

    if os.environ.get("MALLOC_TRIM_THRESHOLD_") != DASK_MALLOC_TRIM:
        tune()
        return
    del os.environ["MALLOC_TRIM_THRESHOLD_"]
    try:
        tune()
    finally:
        os.environ["MALLOC_TRIM_THRESHOLD_"] = DASK_MALLOC_TRIM


_loaded: dict[tuple[Any, ...], RuleSet] = {}
_lock = threading.Lock()
loads: dict[tuple[Any, ...], int] = {}
"""How many times each rule set was loaded in this process (the tests check: once per worker)."""


def evaluate_frame(frame: pd.DataFrame, rules: RuleSet | RuleSource | None = None, *,
                   column: str = "document", file: str = "<dataframe>") -> pd.DataFrame:
    """One output row per input row, in order, with the columns of `OUTPUT_COLUMNS`.

    `frame[column]` holds each patient document as JSON text (str or bytes) or as a parsed
    dict; a null or invalid one gives an error row in its place. Optional columns `file`
    and `row` name records in error rows; otherwise `file` and the 1-based position are used.
    """
    import pandas as pd

    if rules is None:
        rules = RuleSource()
    rule_set = rules.rules() if isinstance(rules, RuleSource) else rules
    if column not in frame.columns:
        raise KeyError(f"no column '{column}' in the frame (columns: {', '.join(map(str, frame.columns))})")
    values = [None if _is_null(v) else v for v in frame[column].tolist()]
    files = frame["file"].tolist() if "file" in frame.columns else None
    rows = frame["row"].tolist() if "row" in frame.columns else None
    if files is None and rows is None:
        outcomes = list(evaluate_partition(values, rule_set, file=file, kind="row"))
    else:  # records named one by one
        outcomes = []
        for index, value in enumerate(values):
            name = str(files[index]) if files is not None else file
            number = int(rows[index]) if rows is not None else index + 1
            outcomes.extend(evaluate_partition([value], rule_set, file=name, first=number, kind="row"))
    table = to_arrow(outcomes)
    out: pd.DataFrame = table.to_pandas()
    out.index = frame.index
    return out


def _is_null(value: Any) -> bool:
    if value is None:
        return True
    try:
        return bool(value != value)  # NaN, pd.NA -> True (pd.NA raises on bool: caught)
    except (TypeError, ValueError):
        return True
