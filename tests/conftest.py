"""Shared test set-up: hypothesis profiles, fixture paths and the source document."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Hypothesis profiles (README, "Tests"): `fast` is the default (100 examples per property, derandomized,
# so the suite stays under 3 minutes on 2 cores); `ci` (1,000 examples per property) is chosen when the
# CI variable is set; `thorough` (100,000) on request. HYPOTHESIS_PROFILE overrides the choice.
settings.register_profile("fast", max_examples=100, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("ci", max_examples=1000, derandomize=True, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.register_profile("thorough", max_examples=100_000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow], print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "fast"))


def source_path() -> Path:
    """The source document the bundled rule set declares and ships (rules/sources/): nothing outside the repository."""
    return ROOT / "rules" / "sources" / "weak-glutes-back-pain.txt"


def inventory_path() -> Path:
    """The guidance inventory the bundled rule set ships beside its source."""
    return ROOT / "rules" / "sources" / "GUIDANCE-INVENTORY.md"


@pytest.fixture(scope="session")
def source_text() -> str:
    path = source_path()
    if not path.is_file():
        pytest.fail(f"source document not found at {path}: the rule set ships it in rules/sources/")
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="session")
def basic_rules():
    import cdss

    return cdss.load_rules(FIXTURES / "basic")


@pytest.fixture(scope="session")
def bundled():
    import cdss

    return cdss.load_rules()


@pytest.fixture(autouse=True)
def _no_user_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the user's ~/.cache/cdss; tests that need the cache set their own."""
    monkeypatch.setenv("CDSS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cdss-cache"))
