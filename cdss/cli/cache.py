"""A per-user cache of checked rule sets, as data, so that the CLI starts fast.

Reading a rule set means importing YAML (and JSON Schema), parsing and checking every
file: most of a one-patient run. A rule set whose exact bytes were loaded before need not
be read again: the cache keeps the loaded result as JSON data (`cdss.snapshot`: no code,
no pickle; rebuilt through the loader's own record types), under a SHA-256 key.

The key is computed from the very bytes the loader parsed (each file is read once, by a
reader that hashes what it hands to the parser), so an edit during a load can never be
recorded under the wrong content. It covers: every file the loader read (path and
bytes: manifest, packs, guidance, declared source documents), the YAML files present in
the rule-set directory (they decide which packs and guidance are read), whether the
declared guidance inventory exists, every bundled JSON Schema, the size and time of every
cdss core module, the working directory (names in messages depend on it) and the
cdss and Python versions. What is read is bounded: only the
files the loader itself reads (listed packs, the manifest, the guidance), each at most
`MAX_RULE_FILE_BYTES`; the cache file at most `MAX_CACHE_BYTES`. Any unreadable,
oversized, corrupt or stale cache file is a miss, never an error. Invalid rule sets are
never recorded. One file per rule-set location, replaced atomically, never accumulated;
read only from a directory and file owned by the current user and writable by no one
else. `CDSS_NO_CACHE=1` turns it off; `CDSS_CACHE_DIR` moves it (default
`$XDG_CACHE_HOME/cdss`, else `~/.cache/cdss`).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__

if TYPE_CHECKING:
    from ..loader import LoadedRules

FORMAT = 4
MAX_CACHE_BYTES = 8 * 1024 * 1024
"""A cache file larger than this is not read (a snapshot of the bundled rules is about 40 KB)."""


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


def cache_file(directory: Path, root: Path) -> Path:
    """The one cache file for a rule-set location (directory or pack file)."""
    slot = hashlib.sha256(f"{FORMAT}|{os.path.abspath(root)}".encode()).hexdigest()[:32]
    return directory / f"rules-{slot}.json"


class _Recorder:
    """The loader's file reader: bounded reads, remembered in order for the key."""

    def __init__(self) -> None:
        self.files: list[tuple[Path, bytes, int]] = []  # path, bytes, the limit they were read with

    def read(self, path: Path, limit: int) -> bytes:
        from ..resources import read_rule_file

        raw = read_rule_file(path, limit)
        self.files.append((path, raw, limit))
        return raw


def _environment(root: Path) -> hashlib._Hash:
    """A hash seeded with everything but the rule files: versions, schemas, code, the directory listing."""
    from ..loader import yaml_files
    from ..resources import read_rule_file, schemas_dir

    # the working directory and the path as given decide how files are named in messages and origins
    digest = hashlib.sha256(f"{FORMAT}|{__version__}|{sys.version}|{os.getcwd()}|{root}".encode())
    for schema in sorted(schemas_dir().glob("*.json")):
        digest.update(f"\0schema\0{schema.name}\0".encode() + read_rule_file(schema))
    package = Path(__file__).resolve().parent.parent
    for module in sorted(package.glob("*.py")):
        info = module.stat()
        digest.update(f"\0code\0{module.name}\0{info.st_size}\0{info.st_mtime_ns}".encode())
    # which YAML files exist decides which packs, guidance and manifest (beside a pack file) are read
    listing = [p.name for p in yaml_files(root if root.is_dir() else root.parent)]
    digest.update(("\0listing\0" + "\0".join(listing)).encode())
    return digest


def _key(environment: hashlib._Hash, files: list[tuple[Path, bytes, int]], present: list[str]) -> str:
    digest = environment.copy()
    for path, raw, limit in files:
        digest.update(f"\0file\0{path}\0{limit}\0{len(raw)}\0".encode())
        digest.update(raw)
    for name in present:  # files the rule set names but the loader only checks for (the guidance inventory)
        digest.update(f"\0present\0{name}\0{os.path.isfile(name)}".encode())
    return digest.hexdigest()


def _trusted(directory: Path, fd: int) -> bool:
    if not hasattr(os, "getuid"):
        return False
    uid = os.getuid()
    d, f = directory.stat(), os.fstat(fd)
    return d.st_uid == uid and f.st_uid == uid and stat.S_ISREG(f.st_mode) \
        and not (d.st_mode & (stat.S_IWGRP | stat.S_IWOTH)) and not (f.st_mode & (stat.S_IWGRP | stat.S_IWOTH))


def _read_cache(directory: Path, file: Path) -> bytes | None:
    """The cache file's bytes, or None if absent, untrusted, not a regular file or too large."""
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        if not _trusted(directory, fd):
            return None
        with os.fdopen(fd, "rb", closefd=False) as stream:
            raw = stream.read(MAX_CACHE_BYTES + 1)
        return raw if len(raw) <= MAX_CACHE_BYTES else None
    except OSError:
        return None
    finally:
        os.close(fd)


def _from_cache(raw: bytes, root: Path, environment: hashlib._Hash) -> LoadedRules | None:
    """The cached rule set if its key matches the files as they are now; None for any doubt."""
    from .. import snapshot
    from ..resources import read_rule_file

    header_end = raw.find(b"\n")
    if header_end < 0 or header_end > 64 * 1024:
        return None
    header = json.loads(raw[:header_end])
    if not isinstance(header, dict) or header.get("format") != FORMAT or not isinstance(header.get("key"), str):
        return None
    inputs, present = header.get("inputs"), header.get("present")
    if not isinstance(inputs, list) or len(inputs) > 1000 or not isinstance(present, list) or len(present) > 1000 \
            or not all(isinstance(name, str) for name in present):
        return None
    files = []
    for item in inputs:
        name, limit = item
        if not isinstance(name, str) or not isinstance(limit, int) or not 0 < limit <= 1 << 30:
            return None
        files.append((Path(name), read_rule_file(Path(name), limit), limit))
    if _key(environment, files, present) != header["key"]:
        return None
    return snapshot.load(raw[header_end + 1:].decode("utf-8"), root)  # type: ignore[no-any-return]


def load(path: Path | None) -> LoadedRules:
    """`loader.load(path)`, from the cache when nothing has changed; raises RuleFileError like it."""
    from .. import loader

    directory = cache_dir()
    if directory is None:
        return loader.load(path)
    from ..resources import rules_dir

    root = Path(path) if path is not None else rules_dir()
    try:
        environment = _environment(root)
    except OSError:
        return loader.load(path)  # let the loader report what cannot be read
    file = cache_file(directory, root)
    raw = _read_cache(directory, file)
    if raw is not None:
        try:
            cached = _from_cache(raw, root, environment)
        except Exception:  # noqa: BLE001 - corrupt, deeply nested, stale or unreadable: a miss
            cached = None
        if cached is not None:
            return cached
    recorder = _Recorder()
    loaded = loader.load(path, read=recorder.read)  # the key is made from exactly these bytes
    present = [str(loaded.inventory)] if loaded.inventory is not None else []
    _store(directory, file, _key(environment, recorder.files, present), recorder.files, present, loaded)
    return loaded


def _store(directory: Path, file: Path, key: str, files: list[tuple[Path, bytes, int]], present: list[str],
           loaded: LoadedRules) -> None:
    """Write the cache file atomically; any failure (read-only home, full disk) is ignored."""
    from .. import snapshot

    text = snapshot.dump(loaded)
    if text is None:
        return
    header = json.dumps({"format": FORMAT, "key": key, "inputs": [[str(path), limit] for path, _, limit in files],
                         "present": present})
    try:
        import tempfile

        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=directory, prefix=".rules-", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(header + "\n" + text)
            os.replace(temporary, file)
        except BaseException:
            os.unlink(temporary)
            raise
    except Exception:  # noqa: BLE001 - a read-only home must not stop an evaluation
        pass
