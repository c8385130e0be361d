"""Population batches: evaluate millions of patient documents on Dask (or Spark), nothing lost.

    from cdss.batch import evaluate_partition, evaluate_frame, RuleSource
    outcomes = evaluate_partition(lines, rules)          # iterable of documents in, Outcomes out, in order
    ddf.map_partitions(evaluate_frame, rules=RuleSource("rules/"), meta=meta())

The command line is `cdss batch` (cdss/cli/batchjob.py); docs/BATCH.md has the details and
the Spark recipe. Needs the `dask` extra (`pip install 'cdss[dask]'`) for the job and frames.
"""

from __future__ import annotations

from .frame import OUTPUT_COLUMNS, SPARK_SCHEMA, RuleSource, arrow_schema, evaluate_frame, meta
from .records import Outcome, evaluate_partition

__all__ = ["OUTPUT_COLUMNS", "SPARK_SCHEMA", "Outcome", "RuleSource", "arrow_schema", "evaluate_frame",
           "evaluate_partition", "meta"]
