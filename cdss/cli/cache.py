"""A per-user cache that remembers which rule sets already passed JSON Schema, so the CLI starts fast.

Checking a rule set against JSON Schema means importing jsonschema and walking every pack:
more than everything else in a one-patient run put together. A rule set whose exact bytes
passed before need not be checked again. The cache stores only that verdict, a SHA-256 key
in a small JSON file: no code and no parsed rules, so a planted or corrupted file can at
worst skip a schema check for content that already matches the key. Every other check
(YAML safety, meaning, parameters) runs on every load.

The key covers the exact bytes of everything the loader reads or runs: every YAML file of
the rule-set directory (or the pack file and its guidance), the bundled guidance, every
bundled JSON Schema, every cdss source file, plus the cdss and Python versions. Invalid
rule sets are never recorded. One file per rule-set location, overwritten, never
accumulated; read only from a directory and file owned by the current user and writable by
no one else. `CDSS_NO_CACHE=1` turns it off; `CDSS_CACHE_DIR` moves it (default
`$XDG_CACHE_HOME/cdss`, else `~/.cache/cdss`).
"""

from __future__ import annotations

import hashlib
import os
import json
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__

if TYPE_CHECKING:
    from ..loader import LoadedRules

FORMAT = 2


def cache_dir() -> Path | None:
    """Where cache files live, or None when the cache is off."""
    if os.environ.get("CDSS_NO_CACHE", "").strip() not in ("", "0"):
        return None
    explicit = os.environ.get("CDSS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME")
    if base:
        return Path(base) / "cdss"
    try:
        return Path.home() / ".cache" / "cdss"
    except RuntimeError:  # no home directory
        return None


def _inputs(path: Path | None) -> list[Path]:
    """Every file whose bytes can change what `loader.load(path)` returns."""
    from ..loader import yaml_files
    from ..resources import rules_dir, schemas_dir

    root = Path(path) if path is not None else rules_dir()
    files: list[Path] = []
    if root.is_dir():
        files += yaml_files(root)
    else:
        files.append(root)
        files += [p for p in (root.parent / "guidance.yaml",) if p.is_file()]
    files += [p for p in (rules_dir() / "guidance.yaml",) if p.is_file()]
    files += sorted(schemas_dir().glob("*.json"))
    files += sorted(Path(__file__).resolve().parent.glob("*.py"))
    return files


def _key(path: Path | None) -> tuple[str, str]:
    """(slot: which rule set, from where; key: the exact content it was built from)."""
    root = str(Path(path).resolve()) if path is not None else "<bundled>"
    where = f"{FORMAT}|{__version__}|{sys.version}|{root}"
    slot = hashlib.sha256(where.encode()).hexdigest()[:32]
    digest = hashlib.sha256(where.encode())
    for file in _inputs(path):
        digest.update(str(file).encode() + b"\0")
        digest.update(file.read_bytes())
        digest.update(b"\0")
    return slot, digest.hexdigest()


def _trusted(directory: Path, file: Path) -> bool:
    if not hasattr(os, "getuid"):
        return False
    uid = os.getuid()
    d, f = directory.stat(), file.stat()
    return d.st_uid == uid and f.st_uid == uid and not (d.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) \
        and not (f.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def load(path: Path | None) -> LoadedRules:
    """`loader.load(path)`, from the cache when nothing has changed; raises RuleFileError like it."""
    from .. import loader

    directory = cache_dir()
    if directory is None:
        return loader.load(path)
    try:
        slot, key = _key(path)
    except OSError:
        return loader.load(path)  # let the loader report unreadable files
    file = directory / f"rules-{slot}.json"
    try:
        if _trusted(directory, file) and json.loads(file.read_text(encoding="utf-8")).get("schema_checked") == key:
            return loader.load(path, schema_checked=True)
    except (OSError, ValueError, AttributeError):  # a missing, stale or corrupt cache is a miss
        pass
    loaded = loader.load(path)
    try:
        import tempfile

        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".rules-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump({"schema_checked": key}, out)
            os.replace(temporary, file)
        except BaseException:
            os.unlink(temporary)
            raise
    except Exception:  # noqa: BLE001 - a read-only home must not stop an evaluation
        pass
    return loaded
