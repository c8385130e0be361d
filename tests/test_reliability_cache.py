"""Issue 16, items 5 and 7: the rule-set cache is keyed by the bytes that were parsed, and reads are bounded."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cdss
from tests.helpers import rules_body, write_rule_set

ROOT = Path(__file__).resolve().parent.parent
TYPO = ("priority: 10", "priority: high")  # a schema error that `cdss validate` reports


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "cache"
    monkeypatch.setenv("CDSS_CACHE_DIR", str(directory))
    monkeypatch.delenv("CDSS_NO_CACHE", raising=False)
    return directory


def _rule_set(tmp_path: Path) -> Path:
    return write_rule_set(tmp_path / "rs", rules_body({"one": "{field: back_pain.present, is: true}"}))


def test_item5_cache_race_an_edit_during_a_load_is_never_recorded_as_checked(
        tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 5: the pack is edited (a typo) just after the loader read it. The cache must record the bytes
    that were parsed, so the next run sees new bytes, checks them in full and reports the typo."""
    from cdss import resources
    from cdss.cli import cache as cli_cache

    rules = _rule_set(tmp_path)
    pack = rules / "pack.yaml"
    valid = pack.read_text(encoding="utf-8")
    real_read = resources.read_rule_file

    def read_then_edit(path: Path, limit: int = resources.MAX_RULE_FILE_BYTES) -> bytes:
        raw = real_read(path, limit)
        if path.name == "pack.yaml" and pack.read_text(encoding="utf-8") == valid:
            pack.write_text(valid.replace(*TYPO), encoding="utf-8")  # a concurrent editor saves a typo
        return raw

    monkeypatch.setattr(resources, "read_rule_file", read_then_edit)
    loaded = cli_cache.load(rules)  # parsed the valid bytes
    assert loaded.rules[0].priority == 10
    monkeypatch.setattr(resources, "read_rule_file", real_read)
    assert "priority: high" in pack.read_text(encoding="utf-8")
    with pytest.raises(cdss.RuleFileError, match="priority"):
        cli_cache.load(rules)
    with pytest.raises(cdss.RuleFileError, match="priority"):  # and it stays reported
        cli_cache.load(rules)


def test_item5_cached_result_equals_a_full_load(tmp_path: Path, cache: Path) -> None:
    """What a hit returns is what the loader returns for the same bytes (the bundled rules and a fixture)."""
    from cdss import loader
    from cdss.cli import cache as cli_cache

    for path in (None, ROOT / "tests" / "fixtures" / "basic"):
        first, second = cli_cache.load(path), cli_cache.load(path)
        assert first == second == loader.load(path)


def _memory_limited_child(code: str, limit_mb: int = 600) -> subprocess.CompletedProcess[str]:
    """Run `code` in a child whose address space is capped: reading a huge file whole fails there."""
    prelude = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({limit_mb} << 20, {limit_mb} << 20))\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ))


def test_item7_unbounded_reads_an_unlisted_huge_yaml_file_is_never_read(tmp_path: Path, cache: Path) -> None:
    """Item 7: an unlisted 1.5 GB junk.yaml in a rule-set directory that lists its packs is not read at all
    (before: read whole for the cache key, 1.49 GB RSS). Sparse, so it costs no disk."""
    rules = _rule_set(tmp_path)
    (rules / "ruleset.yaml").write_text("rule_set:\n  id: test-set\n  title: Test set\n  version: 0.0.1\n"
                                        "  packs: [pack.yaml]\n", encoding="utf-8")
    with open(rules / "junk.yaml", "wb") as junk:
        junk.truncate(1536 << 20)
    code = f"""
        from cdss.cli import cache
        for _ in range(2):  # a miss, then a hit
            loaded = cache.load({str(rules)!r})
        print([r.id for r in loaded.rules])
    """
    child = _memory_limited_child(code)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "['one']" in child.stdout


def test_item7_unbounded_reads_a_huge_listed_pack_is_refused_without_reading_it(tmp_path: Path, cache: Path) -> None:
    rules = _rule_set(tmp_path)
    with open(rules / "pack.yaml", "ab") as pack:
        pack.truncate(1536 << 20)
    code = f"""
        import cdss
        from cdss.cli import cache
        try:
            cache.load({str(rules)!r})
        except cdss.RuleFileError as error:
            print(error)
    """
    child = _memory_limited_child(code)
    assert child.returncode == 0, child.stderr[-2000:]
    assert "pack.yaml" in child.stdout and "at most 1,048,576 bytes" in child.stdout


@pytest.mark.parametrize("content", [
    b"[" * 200_000,  # item 7: RecursionError before
    b'{"format": 3, "key": "' + b"0" * 64 + b'", "inputs": []}\n' + b"[" * 200_000,
    b"\xff\xfe not utf-8",
    b'{"format": 3}\n{}',
    b"",
])
def test_item7_a_corrupt_cache_file_is_a_miss_never_a_crash(tmp_path: Path, cache: Path, content: bytes) -> None:
    from cdss.cli import cache as cli_cache

    rules = _rule_set(tmp_path)
    expected = cli_cache.load(rules)
    file = cli_cache.cache_file(cache, rules)
    file.write_bytes(content)
    assert cli_cache.load(rules) == expected
    assert cli_cache.load(rules) == expected  # and the miss repaired the file


def test_item7_a_tampered_snapshot_with_the_right_key_is_a_miss(tmp_path: Path, cache: Path) -> None:
    """The header's key matches, but the snapshot below it is not a rule set: a miss, a full load."""
    from cdss.cli import cache as cli_cache

    rules = _rule_set(tmp_path)
    expected = cli_cache.load(rules)
    file = cli_cache.cache_file(cache, rules)
    header, _, _ = file.read_bytes().partition(b"\n")
    for body in (b'{"snapshot": 1, "rules": [["x"]]}', b'{"snapshot": 1}', b"[" * 200_000, b"null"):
        file.write_bytes(header + b"\n" + body)
        assert cli_cache.load(rules) == expected


def test_item7_an_oversized_cache_file_is_not_read(tmp_path: Path, cache: Path) -> None:
    from cdss.cli import cache as cli_cache

    rules = _rule_set(tmp_path)
    expected = cli_cache.load(rules)
    file = cli_cache.cache_file(cache, rules)
    with open(file, "ab") as out:
        out.truncate(cli_cache.MAX_CACHE_BYTES + 1)
    assert cli_cache.load(rules) == expected
    assert file.stat().st_size < cli_cache.MAX_CACHE_BYTES  # replaced by a fresh one


def test_a_fifo_named_like_a_rule_file_does_not_hang(tmp_path: Path, cache: Path) -> None:
    """The bounded reader refuses what is not a regular file instead of blocking on it."""
    from cdss.resources import read_rule_file

    fifo = tmp_path / "pack.yaml"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file"):
        read_rule_file(fifo)


def test_an_edit_of_a_declared_source_document_is_a_miss(tmp_path: Path, cache: Path) -> None:
    """Quotes are checked against the declared sources on every load, so the key covers the sources' bytes
    and the inventory's existence: a cached rule set never outlives its evidence."""
    import shutil

    from cdss.cli import cache as cli_cache
    from cdss.resources import rules_dir

    rules = tmp_path / "rules"
    shutil.copytree(rules_dir(), rules)
    loaded = cli_cache.load(rules)
    assert loaded.sources and cli_cache.load(rules) == loaded  # a hit
    source = loaded.sources[0].path
    quote = loaded.rules[0].quote
    original = source.read_text(encoding="utf-8")
    assert quote in original
    source.write_text(original.replace(quote, "something else entirely"), encoding="utf-8")
    with pytest.raises(cdss.RuleFileError, match="quote"):
        cli_cache.load(rules)
    source.write_text(original, encoding="utf-8")
    assert cli_cache.load(rules) == loaded
    assert loaded.inventory is not None
    loaded.inventory.unlink()
    with pytest.raises(cdss.RuleFileError, match="inventory"):
        cli_cache.load(rules)
