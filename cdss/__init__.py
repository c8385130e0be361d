"""cdss: clinical guidance as auditable, executable data.

    import cdss
    rules = cdss.load_rules()              # the bundled rule set, or load_rules("path/to/rules")
    assessment = rules.evaluate(patient)   # patient: a Mapping (parsed JSON)
    assessment.urgency, assessment.cards, assessment.to_json()
    cdss.evaluate(patient)                 # the bundled rules, loaded once

The public names are imported lazily (PEP 562), so `import cdss` (and `cdss --help`)
stays cheap: the loader, YAML, JSON Schema and the rule engine are imported on first use.
"""

from __future__ import annotations

__version__ = "0.2.0"

import importlib
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at run time these are resolved by __getattr__
    from .errors import CdssError, EngineError, ParameterError, PatientDataError, Problem, RuleFileError
    from .result import Assessment
    from .ruleset import RuleSet, load_rules

__all__ = [
    "Assessment", "CdssError", "EngineError", "ParameterError", "PatientDataError", "Problem",
    "RuleFileError", "RuleSet", "evaluate", "load_rules", "__version__",
]

_LAZY = {
    "CdssError": ".errors", "EngineError": ".errors", "ParameterError": ".errors",
    "PatientDataError": ".errors", "Problem": ".errors", "RuleFileError": ".errors",
    "Assessment": ".result",
    "RuleSet": ".ruleset", "load_rules": ".ruleset",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cdss' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


_bundled: RuleSet | None = None
_bundled_lock = threading.Lock()


def bundled_rules() -> RuleSet:
    """The bundled rule set, loaded once per process."""
    global _bundled
    if _bundled is None:
        with _bundled_lock:
            if _bundled is None:
                from .ruleset import load_rules

                _bundled = load_rules()
    return _bundled


def evaluate(patient: Mapping[str, Any], *, trace: bool = False) -> Assessment:
    """Evaluate one patient against the bundled rules (loaded and compiled once, then cached)."""
    return bundled_rules().evaluate(patient, trace=trace)
