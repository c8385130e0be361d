"""What HTTP costs: `cdss serve` throughput and latency next to `RuleSet.evaluate()` alone (issue 11).

    .venv/bin/python benchmarks/service.py           # 2,000 requests per configuration, about a minute
    .venv/bin/python benchmarks/service.py --quick   # 100 requests: proves the script works

The real server (`cdss serve`, uvicorn, authentication ON with an RS384 JWKS, feedback store
in a temporary directory) is started in a subprocess with 1 and then 2 workers, and called by
1 and by 32 concurrent clients (httpx, asyncio, keep-alive connections) with seeded generated
patients (benchmarks/generate.py). Every request carries a fresh signed JWT, signed before the
clock starts, so the client's signing does not count; the server's verification, replay check
and card bookkeeping do. Every response is checked against `evaluate().to_cds_hooks()`.

The client runs on the same machine (2 cores on the project's machine kind) and competes with
the server for the cores, so req/s and latency are a floor, not a ceiling, and depend on the
load average (recorded). "CPU ms/request" (the server's processes, from /proc) is the figure
that load disturbs least: it is what one request costs the server.
Results go to benchmarks/results/service.json and a Markdown table to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from generate import patients

import cdss
from tests.service_helpers import ISS, Keys, Server, free_port, hook_request, token


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its direct children (uvicorn's workers), from /proc."""
    def one(p: int) -> float:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        children = []
    return one(pid) + sum(one(c) for c in children)


def bench_evaluate(documents: list[dict[str, Any]]) -> dict[str, Any]:
    """`evaluate()` + `to_cds_hooks()` in this process, one call after another."""
    rules = cdss.load_rules()
    for document in documents[:50]:
        rules.evaluate(document)
    latencies = []
    cpu_before = time.process_time()
    started = time.perf_counter()
    for document in documents:
        t0 = time.perf_counter()
        rules.evaluate(document).to_cds_hooks()
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_before
    return {"requests": len(documents), "per_second": len(documents) / elapsed, "cpu_ms_per_request": cpu * 1000 / len(documents),
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000}


async def _drive(base: str, bodies: list[dict[str, Any]], bearers: list[str], clients: int,
                 expected: list[bytes]) -> dict[str, Any]:
    import httpx

    url = f"{base}/cds-services/{cdss.load_rules().info.id}"
    latencies: list[float] = []
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(bodies)):
        queue.put_nowait(index)
    wrong = 0
    errors: list[int] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:

        async def worker() -> None:
            nonlocal wrong
            while True:
                try:
                    index = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                try:
                    response = await client.post(url, content=json.dumps(bodies[index]),
                                                 headers={"Authorization": f"Bearer {bearers[index]}",
                                                          "Content-Type": "application/json"})
                except httpx.TransportError:  # e.g. a worker restarted by uvicorn's supervisor under load
                    errors.append(index)
                    continue
                latencies.append(time.perf_counter() - t0)
                if response.status_code != 200 or json.loads(response.content) != json.loads(expected[index]):
                    wrong += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    return {"requests": len(bodies), "clients": clients, "per_second": len(bodies) / elapsed,
            "p50_ms": percentile(latencies, 0.5) * 1000, "p99_ms": percentile(latencies, 0.99) * 1000, "wrong": wrong,
            "connection_errors": len(errors)}


def bench_server(workers: int, documents: list[dict[str, Any]], keys: Keys, tmp: Path) -> list[dict[str, Any]]:
    rules = cdss.load_rules()
    port = free_port()
    directory = tmp / f"workers-{workers}"
    directory.mkdir()
    (directory / "jwks.json").write_text(json.dumps(keys.jwks()))
    (directory / "service.json").write_text(json.dumps({
        "audience_base_url": f"http://127.0.0.1:{port}", "feedback_db": "feedback.sqlite3",
        "issuers": [{"iss": ISS, "jwks_file": "jwks.json"}]}))
    server = Server(["--workers", str(workers), "--config", str(directory / "service.json")], directory, port=port)
    try:
        bodies = [hook_request(d, patient_id=d.get("patient_id", "p-1")) for d in documents]
        expected = [json.dumps(rules.evaluate(d).to_cds_hooks()).encode() for d in documents]
        url = f"{server.base}/cds-services/{rules.info.id}"
        out = []
        for clients in (1, 32):
            warm = [token(keys, url) for _ in range(64)]
            asyncio.run(_drive(server.base, bodies[:64], warm, min(clients, 8), expected[:64]))
            bearers = [token(keys, url) for _ in bodies]  # signed before the clock starts
            cpu_before = process_cpu_seconds(server.process.pid)
            result = asyncio.run(_drive(server.base, bodies, bearers, clients, expected))
            result["server_cpu_ms_per_request"] = (process_cpu_seconds(server.process.pid) - cpu_before) * 1000 / len(bodies)
            result["workers"] = workers
            out.append(result)
            print(f"  {workers} worker(s), {clients:>2} client(s): {result['per_second']:7.0f} req/s, "
                  f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, wrong {result['wrong']}, "
                  f"connection errors {result['connection_errors']}, server CPU {result['server_cpu_ms_per_request']:.2f} ms/request", file=sys.stderr)
        return out
    finally:
        server.stop()


def table(result: dict[str, Any]) -> str:
    lines = ["| path | workers | clients | req/s | p50 ms | p99 ms | CPU ms/request | failed |",
             "|---|---|---|---|---|---|---|---|"]
    e = result["evaluate"]
    lines.append(f"| `evaluate()` + `to_cds_hooks()`, in process | - | 1 | {e['per_second']:,.0f} | {e['p50_ms']:.2f} | "
                 f"{e['p99_ms']:.2f} | {e['cpu_ms_per_request']:.2f} | 0 |")
    for r in result["service"]:
        lines.append(f"| `cdss serve`, HTTP + JWT (RS384) | {r['workers']} | {r['clients']} | {r['per_second']:,.0f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['server_cpu_ms_per_request']:.2f} | "
                     f"{r['wrong'] + r['connection_errors']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="100 requests per configuration (a smoke run)")
    parser.add_argument("--requests", type=int, default=None, help="requests per configuration (default 2,000)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "service.json")
    args = parser.parse_args(argv)
    count = args.requests or (100 if args.quick else 2000)
    documents = patients(count, seed=11)
    keys = Keys()
    result: dict[str, Any] = {
        "when": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "load_average": os.getloadavg()},
        "requests_per_configuration": count,
        "evaluate": bench_evaluate(documents),
    }
    with tempfile.TemporaryDirectory() as tmp:
        result["service"] = [r for workers in (1, 2) for r in bench_server(workers, documents, keys, Path(tmp))]
    wrong = sum(r["wrong"] for r in result["service"])
    dropped = sum(r["connection_errors"] for r in result["service"])
    if dropped:
        print(f"benchmarks/service.py: {dropped} request(s) lost their connection (see 'failed')", file=sys.stderr)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(table(result))
    if wrong:
        print(f"benchmarks/service.py: {wrong} response(s) differed from evaluate().to_cds_hooks()", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
