"""`cdss batch` on Dask versus the local `cdss evaluate --jsonl --workers`, in patients per second (issue 14).

    .venv/bin/python benchmarks/dask_batch.py              # 1,000,000 generated documents (long)
    .venv/bin/python benchmarks/dask_batch.py --count 100000
    .venv/bin/python benchmarks/dask_batch.py --quick      # 5,000 documents: proves the script works

Runs each command as a user would, as a subprocess, on the same seeded JSON Lines file
(benchmarks/generate.py) and times it end to end (wall clock, cluster start-up included; the best of
`--rounds` interleaved rounds, default 2):
`cdss evaluate --jsonl --workers 2` (stdout to /dev/null) and `cdss batch --local-workers 1`
and `--local-workers 2` (jsonl output to a fresh directory). Before timing anything it checks
that the batch output is byte-identical to `cdss evaluate --jsonl` on the first 2,000 lines.
Targets (issue 14): the Dask path within 15 % of the local path at 2 workers; >= 1.8x from 1 to
2 Dask workers. The machine may be shared: the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
CDSS = [sys.executable, "-c", "from cdss.cli import main; main()"]


def generate(path: Path, count: int, seed: int) -> None:
    sys.path.insert(0, str(HERE))
    import generate as gen  # noqa: PLC0415 - benchmarks/generate.py

    with open(path, "w", encoding="utf-8") as out:
        step = 50_000
        for start in range(0, count, step):  # seeds per block: the same file for the same count and seed
            for doc in gen.patients(min(step, count - start), seed=seed * 1_000_003 + start):
                out.write(json.dumps(doc, separators=(",", ":")) + "\n")


def timed(argv: list[str], stdout: object = subprocess.DEVNULL) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode not in (0,):
        raise SystemExit(f"{' '.join(argv[3:])}: exit {done.returncode}\n{done.stderr[-2000:]}")
    return elapsed


def check(path: Path, work: Path) -> None:
    head = work / "check.jsonl"
    with open(path, "rb") as source, open(head, "wb") as out:
        for _ in range(2_000):
            out.write(source.readline())
    reference = subprocess.run([*CDSS, "evaluate", "--jsonl", str(head)], capture_output=True, check=True).stdout
    subprocess.run([*CDSS, "batch", str(head), "--output", str(work / "check-out"), "--local-workers", "2",
                    "--partition-lines", "300"], capture_output=True, check=True)
    written = b"".join(p.read_bytes() for p in sorted((work / "check-out").glob("*.jsonl")))
    if written != reference:
        raise SystemExit("cdss batch output differs from cdss evaluate --jsonl: not timing a wrong answer")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="5,000 documents")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--partition-lines", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best time of each command counts")
    parser.add_argument("--keep", metavar="DIR", help="generate into / reuse DIR (the input file is kept)")
    args = parser.parse_args(argv)
    count = 5_000 if args.quick else args.count
    if args.quick:
        args.partition_lines = 500
    work = Path(tempfile.mkdtemp(prefix="cdss-dask-bench-"))
    data_dir = Path(args.keep) if args.keep else work
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / f"patients-{count}-{args.seed}.jsonl"
    try:
        if not path.exists():
            t = time.perf_counter()
            generate(path, count, args.seed)
            print(f"generated {count:,} documents in {time.perf_counter() - t:.0f} s: {path}", file=sys.stderr)
        check(path, work)
        runs = {
            "cdss evaluate --jsonl --workers 2": [*CDSS, "evaluate", "--jsonl", "--workers", "2", str(path)],
            "cdss batch --local-workers 1": [*CDSS, "batch", str(path), "--output", str(work / "out1"),
                                             "--local-workers", "1", "--partition-lines", str(args.partition_lines)],
            "cdss batch --local-workers 2": [*CDSS, "batch", str(path), "--output", str(work / "out2"),
                                             "--local-workers", "2", "--partition-lines", str(args.partition_lines)],
        }
        small = data_dir / f"patients-{count}-{args.seed}-head.jsonl"
        small_count = min(count // 10, 2 * args.partition_lines)
        with open(path, "rb") as source, open(small, "wb") as out:
            for _ in range(small_count):
                out.write(source.readline())
        best: dict[str, float] = {}
        best_base: dict[str, float] = {}
        for round_ in range(args.rounds):  # rounds interleave the commands, so background load hits them alike
            for name, command in runs.items():
                out_dirs = [part for part in command if part.startswith(str(work / "out"))]
                for directory in out_dirs:
                    shutil.rmtree(directory, ignore_errors=True)
                seconds = timed(command)
                # the same command on a small head of the file: its time is mostly start-up
                short = [str(small) if part == str(path) else part for part in command]
                short = [f"{part}-head" if part in out_dirs else part for part in short]
                for directory in short:
                    if directory.endswith("-head"):
                        shutil.rmtree(directory, ignore_errors=True)
                base = timed(short)
                print(f"round {round_ + 1}: {name}: {seconds:.1f} s ({count / seconds:,.0f} patients/s); "
                      f"{small_count:,} documents: {base:.1f} s", file=sys.stderr)
                best[name] = min(best.get(name, float("inf")), seconds)
                best_base[name] = min(best_base.get(name, float("inf")), base)
        rates = {name: count / seconds for name, seconds in best.items()}
        steady = {name: (count - small_count) / max(best[name] - best_base[name], 1e-9) for name in best}
        local, one, two = rates.values()
        s_local, s_one, s_two = steady.values()
        load = os.getloadavg()
        print(f"\n{count:,} generated documents, best of {args.rounds} interleaved rounds, {os.cpu_count()} cores, "
              f"load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}\n")
        print("| measure | result | target | met |")
        print("|---|---|---|---|")
        print(f"| `cdss evaluate --jsonl --workers 2` | {local:,.0f} patients/s | | |")
        print(f"| `cdss batch --local-workers 2` (Dask) | {two:,.0f} patients/s ({two / local:.2f}x the local path) "
              f"| within 15 % | {'yes' if two >= 0.85 * local else 'no'} |")
        print(f"| `cdss batch`: 1 -> 2 Dask workers | {one:,.0f} -> {two:,.0f} patients/s ({two / one:.2f}x) "
              f"| >= 1.8x | {'yes' if two >= 1.8 * one else 'no'} |")
        print(f"| steady state (each run minus a {small_count:,}-document run of the same command): local 2 workers / "
              f"Dask 1 / Dask 2 workers | {s_local:,.0f} / {s_one:,.0f} / {s_two:,.0f} patients/s "
              f"({s_two / s_local:.2f}x local; {s_two / s_one:.2f}x 1 -> 2) | | |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
