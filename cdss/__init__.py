"""cdss: clinical guidance as auditable, executable data.

    import cdss
    rules = cdss.load_rules()              # the bundled rule set, or load_rules("path/to/rules")
    assessment = rules.evaluate(patient)   # patient: a Mapping (parsed JSON)
    assessment.urgency, assessment.cards, assessment.to_json()
    cdss.evaluate(patient)                 # the bundled rules, loaded once
"""

from __future__ import annotations

__version__ = "0.1.0"

import threading
from collections.abc import Mapping
from typing import Any

from .errors import CdssError, EngineError, ParameterError, PatientDataError, Problem, RuleFileError
from .result import Assessment
from .ruleset import RuleSet, load_rules

__all__ = [
    "Assessment", "CdssError", "EngineError", "ParameterError", "PatientDataError", "Problem",
    "RuleFileError", "RuleSet", "evaluate", "load_rules", "__version__",
]

_bundled: RuleSet | None = None
_bundled_lock = threading.Lock()


def bundled_rules() -> RuleSet:
    """The bundled rule set, loaded once per process."""
    global _bundled
    if _bundled is None:
        with _bundled_lock:
            if _bundled is None:
                _bundled = load_rules()
    return _bundled


def evaluate(patient: Mapping[str, Any], *, trace: bool = False) -> Assessment:
    """Evaluate one patient against the bundled rules (loaded and compiled once, then cached)."""
    return bundled_rules().evaluate(patient, trace=trace)
