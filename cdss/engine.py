"""Drive durable-rules' C engine for one compiled ruleset, safely.

We call `durable_rules_engine` directly instead of `durable.engine.Host`: Host starts two
timer threads that dispatch into the same ruleset handle behind our back, wraps every
firing in a Python Closure, and segfaults when used from several threads. Here each
evaluation asserts one fact under a fresh session id, collects the names of the rules
whose actions are pending, completes them, and deletes the session, all under one lock.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any

from .compiler import CATCH_ALL
from .errors import EngineError

_names = itertools.count()


def _engine() -> Any:
    import durable_rules_engine

    return durable_rules_engine


class DurableRuleset:
    """One registered durable-rules ruleset; `fire(fact)` returns the ids of the rules that matched."""

    def __init__(self, definition: dict[str, Any], label: str) -> None:
        self._engine = _engine()
        self._lock = threading.Lock()
        self._sessions = itertools.count()
        name = f"cdss-{label}-{next(_names)}"
        try:
            self._handle = self._engine.create_ruleset(name, json.dumps(definition, sort_keys=True))
        except Exception as error:  # durable reports only "Could not create ruleset, error code: N"
            raise EngineError(f"durable-rules rejected the compiled rule set ({error}); the loader should have "
                              "caught this: please report it with the rule files") from None

    def fire(self, fact: dict[str, Any]) -> set[str]:
        """Assert `fact` in a fresh session and return every rule that fired (each once)."""
        engine = self._engine
        with self._lock:
            if self._handle is None:
                raise EngineError("this ruleset was closed")
            sid = str(next(self._sessions))
            message = dict(fact, sid=sid, id="patient", kind="patient")
            fired: set[str] = set()
            try:
                code, state_handle = engine.assert_fact(self._handle, json.dumps(message))
            except Exception as error:
                raise EngineError(f"durable-rules failed on assert_fact: {error}") from None
            if code != 0:
                # never delete_state after an unhandled fact: durable-rules 2.0.28 segfaults
                raise EngineError(f"durable-rules did not handle the patient fact (code {code}); the catch-all rule is missing")
            try:
                result = engine.start_action_for_state(self._handle, state_handle)
                while result:
                    action = json.loads(result[1])
                    fired.update(action)
                    next_message = engine.complete_and_start_action(self._handle, state_handle)
                    result = (None, next_message) if next_message else None
            except Exception as error:
                try:
                    engine.abandon_action(self._handle, state_handle)
                except Exception:
                    pass
                raise EngineError(f"durable-rules failed while running actions: {error}") from None
            finally:
                engine.delete_state(self._handle, sid)
        if CATCH_ALL not in fired:
            raise EngineError("the catch-all rule did not fire: the engine state is inconsistent")
        fired.discard(CATCH_ALL)
        return fired

    def close(self) -> None:
        """Release the C ruleset; the object is unusable afterwards."""
        with self._lock:
            handle, self._handle = getattr(self, "_handle", None), None
            if handle is not None:
                self._engine.delete_ruleset(handle)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
