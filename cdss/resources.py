"""Where the bundled rules, schemas and examples live, installed or in a source checkout."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

_PACKAGE_DIR = Path(__file__).resolve().parent
_BUNDLED = _PACKAGE_DIR / "_bundled"  # filled by the wheel build (see pyproject.toml)
_CHECKOUT = _PACKAGE_DIR.parent  # a source checkout or editable install


def _locate(name: str) -> Path:
    for base in (_BUNDLED, _CHECKOUT):
        candidate = base / name
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"cdss installation is incomplete: no '{name}' directory next to {_PACKAGE_DIR}")


def rules_dir() -> Path:
    """The bundled rule set directory."""
    return _locate("rules")


def schemas_dir() -> Path:
    """The directory holding the JSON Schemas (the normative contracts)."""
    return _locate("schemas")


def examples_dir() -> Path:
    """The bundled example patients and scenarios."""
    return _locate("examples")


SCHEMA_NAMES = ("patient", "result", "rule-pack", "rule-set", "guidance", "scenario")


@cache
def schema_text(name: str) -> str:
    """The exact text of a bundled schema, e.g. `schema_text("patient")`."""
    if name not in SCHEMA_NAMES:
        raise KeyError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    return (schemas_dir() / f"{name}.schema.json").read_text(encoding="utf-8")


@cache
def schema(name: str) -> Any:
    """A bundled schema, parsed. Callers must not mutate it."""
    return json.loads(schema_text(name))


MAX_RULE_FILE_BYTES = 1024 * 1024
"""The largest rule file (pack, manifest, guidance) cdss reads."""

MAX_SOURCE_BYTES = 16 * 1024 * 1024
"""The largest source document (declared in ruleset.yaml) cdss reads."""


def read_rule_file(path: Path, limit: int = MAX_RULE_FILE_BYTES) -> bytes:
    """At most `limit` + 1 bytes of a regular file (more means: too large); OSError otherwise.

    Bounded so that a huge file costs nothing, and opened without blocking so that a FIFO
    or device named like a rule file is refused instead of hanging the process.
    """
    import os
    import stat

    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path}: not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as stream:
            return stream.read(limit + 1)
    finally:
        os.close(fd)
