"""Drive durable-rules' C engine for one compiled ruleset, safely.

We call `durable_rules_engine` directly instead of `durable.engine.Host`: Host starts two
timer threads that dispatch into the same ruleset handle behind our back, wraps every
firing in a Python Closure, and segfaults when used from several threads. Here each
evaluation asserts one fact under a fresh session id, reads which rules have actions pending
(durable-rules knows each rule by a short code, mapped back to its name here), completes
them, and deletes the session, all under one lock.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .compiler import CATCH_ALL
from .errors import EngineError

_names = itertools.count()


def _engine() -> Any:
    import durable_rules_engine

    return durable_rules_engine


_tuned = False
_USER_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def tune_allocator() -> None:
    """Keep durable-rules' per-session blocks in the heap (glibc only; once per process; opt-in).

    durable-rules 2.0.28 mallocs about 310 KB for every session (`createStateNode`: 109,440
    and 206,200 bytes) and frees it at `delete_state`, i.e. once per evaluation. With glibc's
    adaptive thresholds, whether these blocks are mmapped and unmapped, or the heap top is
    trimmed and regrown, depends on the heap layout: in about half of all processes every
    evaluation then faults ~50 fresh pages in and runs 2-3x slower (measured: 929,000 minor
    faults for 20,500 evaluations, 3.4 s instead of 1.2 s). Fixed thresholds above that size
    (mmap at 1 MiB, trim when 8 MiB are free at the heap top) make every process the fast
    kind, at the cost of keeping up to 8 MiB of freed heap. Left alone if the user set
    glibc's MALLOC_* or GLIBC_TUNABLES malloc variables.

    This changes the whole process's allocator, so the library never does it on its own:
    `cdss evaluate --jsonl` (a process of its own) calls it, and a host application that
    evaluates many patients may call it once at start-up. (A one-patient command does not:
    importing ctypes would cost more than the tuning saves.)
    """
    global _tuned
    if _tuned:
        return
    _tuned = True
    import os
    import sys

    if sys.platform != "linux" or any(name in os.environ for name in _USER_MALLOC_SETTINGS) or \
            "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        return
    try:
        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return
        import ctypes

        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        mallopt(-1, 8 << 20)  # M_TRIM_THRESHOLD
    except (AttributeError, OSError, ValueError):
        pass


class DurableRuleset:
    """One registered durable-rules ruleset; `fire(fact)` returns the ids of the rules that matched."""

    def __init__(self, definition: dict[str, Any], label: str) -> None:
        self._engine = _engine()
        self._lock = threading.Lock()
        self._sessions = itertools.count()
        self._label = label
        # durable-rules knows each rule by a short code (its name in every action message): code -> name
        self._definition, self._rule_of_code = registered_definition(definition)
        self._width = len(next(iter(self._rule_of_code), ""))
        self._handle: Any = None
        self._closed = False
        self._handle = self._create()
        _live.add(self)

    def _create(self) -> Any:
        name = f"cdss-{self._label}-{os.getpid()}-{next(_names)}"
        try:
            return self._engine.create_ruleset(name, self._definition)
        except Exception as error:  # durable reports only "Could not create ruleset, error code: N"
            raise EngineError(f"durable-rules rejected the compiled rule set ({error}); the loader should have "
                              "caught this: please report it with the rule files") from None

    def _after_fork_in_child(self) -> None:
        """In a forked child: a fresh lock (the parent's may be held by a thread that does not exist
        here) and a fresh engine ruleset on first use (the inherited one may be mid-update)."""
        self._lock = threading.Lock()
        self._handle = None

    def _live_handle(self) -> Any:
        """The C ruleset handle, created on first use after a fork; the caller holds the lock."""
        if self._handle is None:
            if self._closed:
                raise EngineError("this ruleset was closed")
            self._handle = self._create()
        return self._handle

    def fire(self, fact: dict[str, Any]) -> set[str]:
        """Assert `fact` in a fresh session and return every rule that fired (each once)."""
        message = {key: value for key, value in fact.items() if key not in ("sid", "id", "kind")}
        message.update(id="patient", kind="patient")
        return self.fire_encoded(json.dumps(message)[:-1])

    def fire_encoded(self, head: str) -> set[str]:
        """`fire` for a fact already encoded: JSON object text without its closing brace.

        The head must hold `"id": "patient", "kind": "patient"` and no `sid` (added here).
        The rule of each pending action is read from the start of the action message, by its
        code (`{"<code>":{"m":...}}`, see `registered_definition`), instead of parsing the whole
        message, which echoes the fact.
        """
        engine = self._engine
        rule_of_code = self._rule_of_code
        end = 2 + self._width
        with self._lock:
            handle = self._live_handle()
            sid = str(next(self._sessions))
            fired: set[str] = set()
            code, state_handle = _assert_fact(engine, handle, f'{head}, "sid": "{sid}"}}')
            if code != 0:
                # never delete_state after an unhandled fact: durable-rules 2.0.28 segfaults
                raise EngineError(f"durable-rules did not handle the patient fact (code {code}); the catch-all rule is missing")
            try:
                result = engine.start_action_for_state(handle, state_handle)
                action = result[1] if result else None
                while action:
                    # `{"<code>":{"m":{<the fact>}}}`: every code has the same width
                    name = rule_of_code.get(action[2:end])
                    if name is not None and action[end] == '"':
                        fired.add(name)
                    else:  # not the shape we expect: parse it properly
                        fired.update(_owned_rules(action, "patient", rule_of_code))
                    action = engine.complete_and_start_action(handle, state_handle)
            except Exception as error:
                try:
                    engine.abandon_action(handle, state_handle)
                except Exception:
                    pass
                raise EngineError(f"durable-rules failed while running actions: {error}") from None
            finally:
                engine.delete_state(handle, sid)
        if CATCH_ALL not in fired:
            raise EngineError("the catch-all rule did not fire: the engine state is inconsistent")
        fired.discard(CATCH_ALL)
        return fired

    def fire_many(self, heads: Sequence[str]) -> list[set[str]]:
        """`fire_encoded` for several facts at once, in ONE session: the fired rules of each, in order.

        Creating and freeing a session (about 310 KB of C heap) is most of durable-rules'
        fixed cost per patient, so a batch shares one. Two traps shape this (DEPENDENCY-FACTS.md):
        a second fact with the same `id` in a session is dropped silently (code 2), and a fact
        without an id gets one derived from its content, so identical patients would merge;
        hence every fact gets its position as id. The actions pending after each assert belong
        to that fact alone (every rule matches one fact, and the previous fact's actions were
        completed), and each action's echoed fact is checked to carry that id. Every name returned
        is a rule of this ruleset (an action naming any other is an EngineError).
        """
        if not heads:
            return []
        engine = self._engine
        rule_of_code = self._rule_of_code
        end = 2 + self._width
        assert_fact = engine.assert_fact
        start_action = engine.start_action_for_state
        complete_and_start = engine.complete_and_start_action
        cut = len(_HEAD_SUFFIX)
        out: list[set[str]] = []
        with self._lock:
            handle = self._live_handle()
            sid = str(next(self._sessions))
            state_handle = None
            started = False  # a session exists once a fact was taken
            try:
                for position, head in enumerate(heads):
                    body = head[:-cut] if head.endswith(_HEAD_SUFFIX) else _fact_body(head)
                    tail = f'"id": "{position}", "kind": "patient", "sid": "{sid}"}}'
                    try:
                        code, state_handle = assert_fact(handle, f"{body}, {tail}")
                    except Exception as error:
                        raise _assert_error(error) from None
                    if code != 0:
                        # code 2: a fact with this id is already in the session (dropped silently by durable)
                        raise _Unhandled(f"durable-rules did not take patient {position} of the batch (code {code}); "
                                         "facts must be handled and numbered uniquely")
                    started = True
                    fired: set[str] = set()
                    echo = tail + "}}"
                    try:
                        result = start_action(handle, state_handle)
                        action = result[1] if result else None
                        while action:
                            # `{"<code>":{"m":{<the fact>}}}`: a code of fixed width (a one-character code
                            # slices to a shared str with its hash kept), and the fact's own tail
                            name = rule_of_code.get(action[2:end])
                            if name is not None and action[end] == '"' and action.endswith(echo):
                                fired.add(name)
                            else:  # not the shape we expect: parse it and check whose fact it echoes
                                fired.update(_owned_rules(action, str(position), rule_of_code))
                            action = complete_and_start(handle, state_handle)
                    except Exception as error:
                        try:
                            engine.abandon_action(handle, state_handle)
                        except Exception:
                            pass
                        if isinstance(error, EngineError):
                            raise
                        raise EngineError(f"durable-rules failed while running actions: {error}") from None
                    try:
                        fired.remove(CATCH_ALL)
                    except KeyError:
                        raise EngineError("the catch-all rule did not fire: the engine state is inconsistent") from None
                    out.append(fired)
            except _Unhandled as error:
                # never delete_state after an unhandled fact: durable-rules 2.0.28 segfaults
                raise EngineError(str(error)) from None
            except BaseException:
                if started:
                    engine.delete_state(handle, sid)
                raise
            engine.delete_state(handle, sid)
        return out

    def close(self) -> None:
        """Release the C ruleset; the object is unusable afterwards."""
        with self._lock:
            handle, self._handle = getattr(self, "_handle", None), None
            self._closed = True
            if handle is not None:
                self._engine.delete_ruleset(handle)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _assert_fact(engine: Any, handle: Any, text: str) -> tuple[int, Any]:
    """`assert_fact` with its failures as EngineError (code 0: handled; see the callers for others)."""
    try:
        return engine.assert_fact(handle, text)  # type: ignore[no-any-return]
    except Exception as error:
        raise _assert_error(error) from None


def _assert_error(error: Exception) -> EngineError:
    """An `assert_fact` failure, in words."""
    if isinstance(error, UnicodeEncodeError):
        return EngineError("a patient fact holds text that is not valid Unicode (an unpaired surrogate); "
                           "the input boundary should have refused it")
    return EngineError(f"durable-rules failed on assert_fact: {error}")


_live: weakref.WeakSet[DurableRuleset] = weakref.WeakSet()
_fork_hooks: list[Callable[[], None]] = []


def after_fork_in_child(hook: Callable[[], None]) -> None:
    """Run `hook` in every forked child (for locks held by other modules around the engine)."""
    _fork_hooks.append(hook)


def _reset_after_fork() -> None:
    """os.fork() copies only the calling thread: a lock another thread held stays held forever
    in the child. Give every live ruleset a new lock and a new engine ruleset on first use."""
    for ruleset in list(_live):
        ruleset._after_fork_in_child()
    for hook in _fork_hooks:
        hook()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def registration_problem(definition: dict[str, Any]) -> str | None:
    """Register a compiled definition with durable-rules and release it; why it was refused, or None.

    `cdss validate` runs this so that nothing that validates can fail to register at evaluate time.
    """
    try:
        DurableRuleset(definition, "validate").close()
    except EngineError as error:
        return str(error)
    return None


_HEAD_SUFFIX = ', "id": "patient", "kind": "patient"'


class _Unhandled(Exception):
    """A fact the engine refused: its session must not be deleted (durable-rules segfaults)."""


def _fact_body(head: str) -> str:
    """A fact head (`fire_encoded`'s form) without its `"id"` and `"kind"` entries."""
    if head.endswith(_HEAD_SUFFIX):
        return head[:-len(_HEAD_SUFFIX)]
    message = {key: value for key, value in json.loads(head + "}").items() if key not in ("sid", "id", "kind")}
    return json.dumps(message)[:-1]


def _owned_rules(action: str, fact_id: str, rule_of_code: Mapping[str, str]) -> list[str]:
    """The rule names of one action message, checked to be rules of this ruleset about the fact `fact_id`."""
    names = []
    for code, frames in json.loads(action).items():
        name = rule_of_code.get(code)
        if name is None:
            raise EngineError(f"durable-rules fired a rule that does not exist (code '{code}'); please report this")
        for frame in frames.values() if isinstance(frames, dict) else ():
            if not isinstance(frame, dict) or frame.get("id") != fact_id:
                raise EngineError(f"durable-rules reported rule '{name}' for another patient of the batch; "
                                  "please report this")
        names.append(name)
    return names


_CODE_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def registered_definition(definition: Mapping[str, Any]) -> tuple[str, dict[str, str]]:
    """The ruleset text durable-rules gets for `definition`, and each rule's name by its code.

    Every rule is registered under a code of the same width (one character for up to 62 rules,
    the catch-all included), in sorted order of the names: durable-rules names the rule at the
    start of every action message, and a fixed-width code is read there with one slice instead
    of a search (one character: a str CPython keeps, hash included). Rule names never reach
    durable-rules.
    """
    names = sorted(definition)
    width = 1
    while len(_CODE_ALPHABET) ** width < len(names):
        width += 1
    codes = ["".join(digits) for digits in itertools.islice(itertools.product(_CODE_ALPHABET, repeat=width), len(names))]
    # each name to one str object of it (sys.intern), so the sets of fired rules (kept as memo keys
    # by the result assembler) share their strings instead of holding a new copy per patient
    rule_of_code = {code: sys.intern(name) for code, name in zip(codes, names)}
    text = json.dumps({code: definition[name] for code, name in zip(codes, names)}, sort_keys=True)
    return text, rule_of_code
