"""Seeded, deterministic generator of valid patient documents (schemas/patient.schema.json).

Walks the schema itself, so a field added to the contract is generated without a change
here. Every tri-state is true / false / null / absent; enums take one of their values,
null or absent; integers a value within bounds (mostly small, as in practice), null or
absent; whole sections are sometimes absent. Red flags are mostly answered "no" so that
most documents reach the exercise-plan branch (the most work for result assembly).

    python benchmarks/generate.py 10000 --seed 1 > patients.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from typing import Any

ABSENT = object()


def _resolve(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in prop:
        target = defs[prop["$ref"].rsplit("/", 1)[-1]]
        return {**target, **{k: v for k, v in prop.items() if k != "$ref"}}
    return prop


def _tristate(rng: random.Random, red_flag: bool) -> Any:
    if red_flag:  # mostly "no", some yes / unknown: exercises every screening verdict
        return rng.choices((False, True, None, ABSENT), weights=(88, 4, 4, 4))[0]
    return rng.choice((True, False, None, ABSENT))


def _value(rng: random.Random, prop: dict[str, Any], defs: dict[str, Any], path: str) -> Any:
    prop = _resolve(prop, defs)
    if "properties" in prop:
        if path and rng.random() < 0.08:
            return ABSENT
        out: dict[str, Any] = {}
        for name, sub in prop["properties"].items():
            value = _value(rng, sub, defs, f"{path}.{name}" if path else name)
            if value is not ABSENT:
                out[name] = value
        return out
    if "enum" in prop:
        return rng.choice([*prop["enum"], ABSENT])
    types = prop.get("type")
    types = [types] if isinstance(types, str) else list(types or [])
    if "boolean" in types:
        return _tristate(rng, path.startswith("red_flags."))
    if "integer" in types:
        roll = rng.random()
        if roll < 0.1:
            return None if "null" in types else ABSENT
        if roll < 0.2:
            return ABSENT
        low, high = prop.get("minimum", 0), prop.get("maximum", 1000)
        if roll < 0.95:
            return rng.randint(low, min(high, low + 12))
        return rng.randint(low, high)
    if "string" in types:
        return ABSENT  # patient_id is set by the caller
    raise ValueError(f"unsupported schema node at {path or '$'}: {prop}")


def patients(count: int, seed: int = 1, schema: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """`count` valid patient documents, the same for the same seed."""
    if schema is None:
        from cdss.resources import schema as load_schema

        schema = load_schema("patient")
    rng = random.Random(seed)
    defs = schema.get("$defs", {})
    out = []
    for index in range(count):
        doc = _value(rng, schema, defs, "")
        if rng.random() < 0.9:
            doc = {"patient_id": f"bench-{seed}-{index:07d}", **doc}
        out.append(doc)
    return out


_ODD_VALUES: tuple[Any, ...] = (None, True, False, 0, 1, -1, 3.0, 3.5, float("nan"), float("inf"), 520, 521, 520.0,
                                 "true", "", "improving", "none", "activation", "x" * 65, "x" * 64, [], {}, {"present": True},
                                 2**70, "\ud800", "Improving")
_ODD_KEYS: tuple[Any, ...] = ("present", "trend", "stage", "weeks_consistent", "patient_id", "red_flags", "extra", 1,
                              "symptoms", "red_flag", "back_pain")


def mutants(docs: list[dict[str, Any]], per_doc: int = 4, seed: int = 1) -> list[Any]:
    """Mostly invalid variants of `docs` (wrong types, unknown keys, out-of-range values, removed keys),
    for checking that fast paths reject exactly what the reference validator rejects."""
    import copy

    rng = random.Random(seed)
    out: list[Any] = []
    for doc in docs:
        for _ in range(per_doc):
            mutant = copy.deepcopy(doc)
            for _ in range(rng.randint(1, 3)):
                node = mutant
                while rng.random() < 0.7:
                    inner = [k for k, v in node.items() if isinstance(v, dict)]
                    if not inner:
                        break
                    node = node[rng.choice(inner)]
                roll = rng.random()
                if roll < 0.6 and node:
                    node[rng.choice(list(node))] = rng.choice(_ODD_VALUES)
                elif roll < 0.85:
                    node[rng.choice(_ODD_KEYS)] = rng.choice(_ODD_VALUES)
                elif node:
                    del node[rng.choice(list(node))]
            out.append(mutant)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    write = sys.stdout.write
    for doc in patients(args.count, args.seed):
        write(json.dumps(doc, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main()
