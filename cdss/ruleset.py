"""RuleSet: a loaded, immutable rule set that evaluates patients; safe to share between threads."""

from __future__ import annotations

import itertools
import math
import re
import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from . import __version__
from .coherence import ConflictFinder, QuestionFinder, review_status
from .conditions import evaluate as evaluate_condition
from .conditions import leaves
from .engine import after_fork_in_child
from .errors import EngineError, ParameterError, PatientDataError
from .fields import patient_fields
from .loader import LoadedRules, check_parameter_value, load, nearest, parameter_constraint_problem
from .model import Conflict, Parameter, Rule, RuleSetInfo
from .patient import encode_fact, prepare
from .result import RED_FLAG_PREFIX, Assembler, Assessment, canonical, pending_assessment

BATCH_SIZE = 64
"""Patients per durable-rules session in `evaluate_many`: measured best at 10-100 (benchmarks/run.py);
at 1,000 the session's pools cross glibc's mmap threshold and every patient takes page faults."""


class RuleSet:
    """A checked rule set plus the parameter values in force. Build with `cdss.load_rules()`."""

    def __init__(self, loaded: LoadedRules, overrides: Mapping[str, Any] | None = None) -> None:
        self._loaded = loaded
        values = {name: p.default for name, p in loaded.parameters.items()}
        values.update(resolve_overrides(loaded.parameters, overrides or {}))
        for name in loaded.parameters:
            problem = parameter_constraint_problem(loaded.parameters, values, name)
            if problem:
                raise ParameterError(f"parameter values conflict: {problem}")
        check_values_like_defaults(loaded, values)
        if overrides:
            check_engine_limits(loaded, values)
        self._params = MappingProxyType(values)
        self._params_key = canonical(values)
        self._rules = MappingProxyType({rule.id: rule for rule in loaded.rules})
        # fields some rule reads, plus every red flag: the screening verdict reads them all
        self._needed = frozenset(leaf.field.path for rule in loaded.rules for leaf in leaves(rule.when)) | frozenset(
            path for path in patient_fields() if path.startswith(RED_FLAG_PREFIX))
        self._rule_ids = frozenset(self._rules)
        self._questions = QuestionFinder(loaded.rules, values)
        self._conflicts = ConflictFinder(loaded.conflicts, values)
        self._assembler = Assembler(info=loaded.info, version=__version__, rules=self._rules, needed=self._needed,
                                    params=self._params, params_key=self._params_key,
                                    scope=loaded.scope, review=review_status(loaded.packs),
                                    stands_alone=loaded.stands_alone, questions=self._questions.pairs)
        self._engine: Any = None
        self._engine_lock = threading.Lock()
        _live.add(self)

    # ------------------------------------------------------------ what it is
    @property
    def info(self) -> RuleSetInfo:
        """Identity stamped on every result: id, version, digest."""
        return self._loaded.info

    @property
    def rules(self) -> tuple[Rule, ...]:
        """The active rules, in file order."""
        return self._loaded.rules

    @property
    def parameters(self) -> Mapping[str, Parameter]:
        """The declared parameters."""
        return MappingProxyType(self._loaded.parameters)

    @property
    def parameter_values(self) -> Mapping[str, Any]:
        """The values in force (defaults plus overrides)."""
        return self._params

    @property
    def loaded(self) -> LoadedRules:
        """Everything the loader read (packs, guidance catalogue, warnings), for reports."""
        return self._loaded

    @property
    def root(self) -> Path:
        return self._loaded.root

    def rule(self, rule_id: str) -> Rule:
        """One rule by id; KeyError names the nearest id."""
        try:
            return self._rules[rule_id]
        except KeyError:
            raise KeyError(f"no rule '{rule_id}'{nearest(rule_id, self._rules)}") from None

    def with_parameters(self, overrides: Mapping[str, Any]) -> RuleSet:
        """A new RuleSet with policy parameters overridden (validated); this one is unchanged."""
        merged = {name: value for name, value in self._params.items()
                  if value != self._loaded.parameters[name].default}
        merged.update(overrides)
        return RuleSet(self._loaded, merged)

    # ------------------------------------------------------------ evaluation
    def _durable(self) -> Any:
        if self._engine is None:
            with self._engine_lock:
                if self._engine is None:
                    from .compiler import compile_rules
                    from .engine import DurableRuleset

                    definition = compile_rules(self._loaded.rules, dict(self._params))
                    self._engine = DurableRuleset(definition, self._loaded.info.id)
        return self._engine

    def evaluate(self, patient: Mapping[str, Any], *, trace: bool = False) -> Assessment:
        """Validate the patient document, run the rules, and assemble the result.

        `patient` is a patient document or a completed FHIR QuestionnaireResponse answering this
        rule set's Questionnaire (recognised by `resourceType`, see cdss.fhir). Raises
        PatientDataError for an invalid document (nothing reaches the engine) and EngineError if
        durable-rules fails.
        """
        document, fact, unknown, encoded, conflicts, answers = self._prepare(patient)
        fired = (self._engine or self._durable()).fire_encoded(encoded)
        if not fired <= self._rule_ids:
            raise EngineError(f"durable-rules fired rules that do not exist: {sorted(fired - self._rule_ids)}")
        steps = self._trace(fact, fired) if trace else None
        return self._assembler.assess(fired=fired, fact=fact, unknown=unknown, patient=document, trace=steps,
                                      questions=self._questions.open(fact, fired), conflicts=conflicts, answers=answers)

    def _prepare(self, patient: Any) -> tuple[dict[str, Any], dict[str, Any], list[str], str, tuple[Conflict, ...], str]:
        """`patient.prepare`, plus a FHIR QuestionnaireResponse converted on the failure path, plus the
        declared contradictions that hold, whose fields the rules then read as unknown (issue 17).
        The last item is the patient's answers as given, before any was read as unknown (`patient.answers_text`),
        for the card UUIDs."""
        try:
            document, fact, unknown, encoded, answers = prepare(patient)  # validation and the fact, in one pass
        except PatientDataError:
            # Only a document that is not a valid patient document may be a FHIR resource: the
            # plain-document path pays nothing for FHIR, and cdss.fhir is imported only for one.
            if not (isinstance(patient, Mapping) and "resourceType" in patient):
                raise
            from .fhir.response import as_patient_document

            document, fact, unknown, encoded, answers = prepare(as_patient_document(patient, self))
        conflicts = self._conflicts.find(fact)
        if conflicts:  # contradictory answers are not used silently: the rules read them as unknown
            fact, unknown = self._conflicts.read_as_unknown(fact, unknown, conflicts)
            encoded = encode_fact(fact)
        return document, fact, unknown, encoded, conflicts, answers

    def evaluate_many(self, patients: Iterable[Any], *, trace: bool = False,
                      chunk: int = BATCH_SIZE) -> Iterator[Assessment | PatientDataError]:
        """Evaluate many patients; yields, in input order, one item per document: its Assessment,
        or the PatientDataError that `evaluate()` would raise for it (the run goes on). A document
        may be anything `evaluate()` takes (a patient document, a FHIR QuestionnaireResponse).

        Each Assessment is the same, byte for byte, as `evaluate(patient)` gives. Up to `chunk`
        valid documents share one durable-rules session (its creation and release is most of
        the engine's fixed cost per patient). `patients` is consumed lazily, one chunk at a
        time, so memory stays bounded. An EngineError is raised, not yielded: it is not about
        one document. Thread-safe like `evaluate()`; other threads wait at most one chunk.
        Bad arguments (a single document instead of an iterable, a chunk < 1) raise at once.
        """
        if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk < 1:
            raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
        if isinstance(patients, (str, bytes, bytearray, Mapping)):  # one document, iterated by mistake
            raise TypeError("evaluate_many takes an iterable of patient documents (e.g. a list); "
                            "for one document use evaluate()")
        return self._many(iter(patients), trace, chunk)

    def _many(self, iterator: Iterator[Any], trace: bool, chunk: int) -> Iterator[Assessment | PatientDataError]:
        prepare_one = self._prepare
        assemble = self._assembler.assess
        pending = self._assembler.pending
        open_questions = self._questions.open
        while True:
            documents = list(itertools.islice(iterator, chunk))
            if not documents:
                return
            prepared: list[Any] = []
            heads: list[str] = []
            for document in documents:
                try:
                    item = prepare_one(document)
                except PatientDataError as error:
                    prepared.append(error)
                    continue
                prepared.append(item)
                heads.append(item[3])
            fired_all = iter((self._engine or self._durable()).fire_many(heads))
            for item in prepared:
                if isinstance(item, PatientDataError):
                    yield item
                    continue
                document, fact, unknown, _, conflicts, answers = item
                fired = next(fired_all)  # only rules of this rule set: fire_many checks every name it reads
                if trace:
                    yield assemble(fired=fired, fact=fact, unknown=unknown, patient=document, trace=self._trace(fact, fired),
                                   questions=open_questions(fact, fired), conflicts=conflicts, answers=answers)
                else:  # assess() without a trace, one call less per patient
                    yield pending_assessment(pending(fired, fact, unknown, document, open_questions(fact, fired),
                                                     conflicts, answers))

    def _trace(self, fact: dict[str, Any], fired: set[str]) -> list[dict[str, Any]]:
        steps = []
        params = dict(self._params)
        for rule in sorted(self._loaded.rules, key=lambda r: r.id):
            conditions: list[dict[str, Any]] = []
            holds = evaluate_condition(rule.when, fact, params, conditions)
            if holds != (rule.id in fired):
                raise EngineError(f"durable-rules and the reference evaluator disagree on rule '{rule.id}'; "
                                  "please report this with the rule files")
            steps.append({"rule": rule.id, "fired": holds, "conditions": conditions})
        return steps

    def __repr__(self) -> str:
        info = self._loaded.info
        return f"<RuleSet {info.id} {info.version} rules={len(self._rules)} {info.digest[:19]}>"


def resolve_overrides(parameters: Mapping[str, Parameter], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Check overrides: declared, policy (not source), right type (strings are parsed), within bounds."""
    out: dict[str, Any] = {}
    for name, value in overrides.items():
        if name not in parameters:
            raise ParameterError(f"unknown parameter '{name}' (declared: {', '.join(sorted(parameters))}){nearest(name, parameters)}")
        param = parameters[name]
        if not param.overridable:
            raise ParameterError(f"parameter '{name}' is stated by the source document and cannot be overridden "
                                 "(only origin: policy parameters can)")
        value = parse_parameter_value(param, value)
        problem = check_parameter_value(param, value)
        if problem:
            raise ParameterError(f"parameter '{name}': {problem}")
        out[name] = value
    return out


def parse_parameter_value(param: Parameter, value: Any) -> Any:
    """Coerce a command-line string (or check a Python value) to the parameter's declared type."""
    kind = param.type
    if isinstance(value, str) and kind != "string":
        text = value.strip().lower()
        try:
            if kind in ("integer", "number") and not _PLAIN_NUMBER[kind].fullmatch(text):
                raise ValueError  # int()/float() also read '1_2' and non-ASCII digits
            if kind == "integer":
                return int(text)
            if kind == "number":
                number = float(text)
                if number != number or number in (float("inf"), float("-inf")):
                    raise ValueError
                return number
            if kind == "boolean" and text in ("true", "false", "yes", "no"):
                return text in ("true", "yes")
        except ValueError:
            pass
        raise ParameterError(f"parameter '{param.name}' takes {kind}, got {value!r}")
    if kind == "number" and isinstance(value, float) and not math.isfinite(value):
        raise ParameterError(f"parameter '{param.name}' takes a finite number, got {value!r}")
    ok = {"integer": isinstance(value, int) and not isinstance(value, bool),
          "number": isinstance(value, (int, float)) and not isinstance(value, bool),
          "boolean": isinstance(value, bool), "string": isinstance(value, str)}[kind]
    if not ok:
        raise ParameterError(f"parameter '{param.name}' takes {kind}, got {value!r}")
    return value


def load_rules(path: str | Path | None = None, parameters: Mapping[str, Any] | None = None) -> RuleSet:
    """Load a rule set (the bundled one by default); raises RuleFileError or ParameterError."""
    return RuleSet(load(path), parameters)


_live: weakref.WeakSet[RuleSet] = weakref.WeakSet()


def _new_locks_after_fork() -> None:
    """A forked child inherits the engine lock as it was: held, if another thread was compiling."""
    for ruleset in list(_live):
        ruleset._engine_lock = threading.Lock()
    import cdss

    from . import patient

    patient._lock = threading.Lock()
    cdss._bundled_lock = threading.Lock()


after_fork_in_child(_new_locks_after_fork)


_PLAIN_NUMBER = {"integer": re.compile(r"[+-]?[0-9]+"),
                 "number": re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:e[+-]?[0-9]+)?")}
"""`--param` numbers: ASCII digits only (int() would read '1_2' as 12 and Arabic-Indic digits as digits)."""


def check_values_like_defaults(loaded: LoadedRules, values: Mapping[str, Any]) -> None:
    """Overrides pass every check the loader applies to defaults: finite numbers within bounds,
    and no exercise dose whose minimum exceeds its maximum (sets 9..1 would be nonsense advice)."""
    import math

    from .model import resolve_bound

    for name, value in values.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ParameterError(f"parameter '{name}': {value!r} is not a finite number")
        problem = check_parameter_value(loaded.parameters[name], value)
        if problem:
            raise ParameterError(f"parameter '{name}': {problem}")
    for rule in loaded.rules:
        exercise = rule.then.get("exercise") if isinstance(rule.then, Mapping) else None
        if not exercise:
            continue
        for span in ("sets", "reps"):
            bounds = exercise.get(span)
            if not isinstance(bounds, Mapping) or "min" not in bounds or "max" not in bounds:
                continue
            low, high = resolve_bound(bounds["min"], values), resolve_bound(bounds["max"], values)
            if isinstance(low, (int, float)) and isinstance(high, (int, float)) and low > high:
                raise ParameterError(f"parameter values make rule '{rule.id}' advise {span} from {low} to {high}: "
                                     f"the minimum may not exceed the maximum")


def check_engine_limits(loaded: LoadedRules, values: Mapping[str, Any]) -> None:
    """The engine limits, again under overridden values: two thresholds that were equal by
    default are two conditions for the engine once they differ (docs/RULE-LANGUAGE.md)."""
    from .compiler import limit_problems

    for rule, message in limit_problems(loaded.rules, dict(values)):
        where = f" (rule '{rule.id}')" if rule is not None else ""
        raise ParameterError(f"with these parameter values the rule set exceeds an engine limit{where}: {message}")
