"""Turn the set of fired rules into the result document of CONTRACTS.md, deterministically."""

from __future__ import annotations

import copy
import hashlib
import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from json.encoder import encode_basestring as encode_text
from json.encoder import encode_basestring_ascii as encode_ascii
from typing import Any, NamedTuple

from .fields import field_label, patient_fields
from .model import (
    INDICATOR_ORDER,
    NO_SCOPE,
    PLACEHOLDER,
    URGENCY_ORDER,
    Conflict,
    Question,
    Rule,
    RuleSetInfo,
    Scope,
    resolve_bound,
)
from .patient import answers_text

CARD_NAMESPACE_BYTES = bytes.fromhex("c3dc0c314be458548455f308d83b51ea")
"""`uuid.uuid5(uuid.NAMESPACE_URL, "https://cdss.invalid/cards").bytes`, the namespace of card UUIDs
(`CARD_NAMESPACE` is it as a uuid.UUID): bytes, so a one-patient run need not import uuid."""


def __getattr__(name: str) -> Any:
    if name == "CARD_NAMESPACE":
        import uuid

        return uuid.UUID(bytes=CARD_NAMESPACE_BYTES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def card_tags(digest: str, rule_ids: Iterable[str], digits: int = 8) -> dict[str, str]:
    """Each rule's tag, the first group of its card UUIDs: the first `digits` hex digits of
    SHA-1(CARD_NAMESPACE bytes + "{digest}|{rule id}"). Rules are taken in id order; one whose tag
    an earlier rule holds hashes "{digest}|{rule id}|1", "|2", … instead, so the cards of one result
    never share a UUID (two of 100 rules share 8 digits about once in a million rule sets)."""
    ordered = sorted(rule_ids)
    if len(ordered) > 16 ** digits:
        raise ValueError(f"{len(ordered)} rules cannot have distinct tags of {digits} hex digits")
    tags: dict[str, str] = {}
    taken: set[str] = set()
    for rule_id in ordered:
        name, retry = f"{digest}|{rule_id}", 0
        while (tag := hashlib.sha1(CARD_NAMESPACE_BYTES + name.encode()).hexdigest()[:digits]) in taken:
            retry += 1
            name = f"{digest}|{rule_id}|{retry}"
        taken.add(tag)
        tags[rule_id] = tag
    return tags


def _uuid5(name: str) -> str:
    """`str(uuid.uuid5(CARD_NAMESPACE, name))`."""
    import uuid

    return str(uuid.uuid5(uuid.UUID(bytes=CARD_NAMESPACE_BYTES), name))
EXTENSION_KEY = "invalid.cdss"
TOPIC_SYSTEM = "https://cdss.invalid/rules"
"""The code system of `source.topic` (a CDS Hooks Coding needs `system` and `code`): codes are rule ids."""
RED_FLAG_PREFIX = "red_flags."


def screening_verdict(flags: Sequence[str]) -> str:
    """From the flattened red-flag answers: positive if any is yes, negative if all are no, else incomplete."""
    if "true" in flags:
        return "positive"
    if all(flag == "false" for flag in flags):
        return "negative"
    return "incomplete"


URGENCY_FLOOR = {"positive": URGENCY_ORDER.index("emergency"), "incomplete": URGENCY_ORDER.index("see-professional"),
                 "negative": 0}
"""Defence in depth: whatever the rules say, a red flag is an emergency and an unanswered one is never below
see-professional (the bundled rules ask for exactly this; a broken rule set cannot ask for less)."""


PLAN_STATUS = {"negative": "recommended", "positive": "withheld", "incomplete": "pending-screening"}
PLAN_NOTE = {
    "withheld": "Exercise advice is withheld: a red flag is present. Seek immediate medical attention first.",
    "pending-screening": "Exercise advice is pending: answer the red-flag questions first (see the questions listed).",
    "pending-answers": "No exercise plan yet: answer the questions listed first (back pain now, exercise stage or "
                       "weeks of consistent exercise); the plan depends on them.",
    "not-indicated": "No exercise plan: no back pain is reported and no glute programme is under way.",
}
"""Why a plan is not recommended, by plan status (issue 17: a plan says what to do, or why not)."""
PLAN_NOTE_ALONE = "Exercise advice is withheld: this needs immediate medical attention first."
"""The note when a rule whose urgency stands alone (emergency) fired with no red flag present."""

QUESTION_FLOOR = URGENCY_ORDER.index("self-care")
"""While a question that could raise urgency is open, urgency is never `none` (unknown is not "no")."""

TIMEFRAME_ORDER = ("immediately", "soon", "within-weeks", "routine")
"""Most urgent first: of two referrals to one destination, the earlier timeframe (then fewer weeks) is kept.
`soon` (older rule sets) is left where it was, before the concrete `within-weeks`."""


def render(text: str, params: Mapping[str, Any]) -> str:
    """Fill `{{ params.NAME }}` placeholders (names were checked by the loader)."""
    return PLACEHOLDER.sub(lambda m: _show(params[m.group(1)]), text)


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def card_order(rule: Rule) -> tuple[int, int, str]:
    """critical → warning → info, then priority high first, then rule id."""
    return INDICATOR_ORDER.index(rule.indicator), -rule.priority, rule.id


def canonical(data: Any) -> str:
    """The one JSON spelling of a value: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


_COMPACT = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))  # = json.dumps(..., same options), built once


def compact(data: Any) -> str:
    """One compact JSON line, UTF-8 kept, keys in their order: how results and records are written."""
    return _COMPACT.encode(data)


class _RuleOutputs:
    """The patient-independent outputs of one rule, rendered once under the parameters in force,
    as data (shared, read-only, by the results that show them) and as JSON text (spliced into
    `Assessment.to_json`)."""

    __slots__ = (
        "card",
        "card_body",
        "card_body_merged",
        "card_json",
        "card_json_merged",
        "card_rank",
        "exercise",
        "exercise_data",
        "exercise_json",
        "finding",
        "finding_json",
        "gated",
        "has_phase",
        "id",
        "note",
        "note_json",
        "phase",
        "priority_rank",
        "supersedes",
        "urgency",
        "uuid_tag",
    )

    def __init__(self, rule: Rule, card_rank: int, priority_rank: int, params: Mapping[str, Any], source_title: str,
                 uuid_tag: str) -> None:
        then = rule.then
        self.id = rule.id
        self.uuid_tag = uuid_tag  # the first group of this rule's card UUIDs (`card_tags`)
        self.supersedes = rule.supersedes
        self.card_rank = card_rank
        self.priority_rank = priority_rank
        self.urgency = URGENCY_ORDER.index(rule.urgency)
        self.gated = rule.gated_by_screening
        finding = then.get("finding")
        self.finding: dict[str, Any] | None = None
        if finding:
            self.finding = {"rule": rule.id, "code": finding["code"]}
            if "side" in finding:
                self.finding["side"] = finding["side"]
            self.finding["text"] = render(finding["text"], params)
        plan = then.get("plan", {})
        self.has_phase = "phase" in plan
        self.phase = plan["phase"] if self.has_phase else None
        note = plan.get("note")
        self.note = render(note, params) if note else None
        exercise = then.get("exercise")
        self.exercise: tuple[Any, ...] | None = None
        if exercise:
            self.exercise = (exercise["id"], exercise["name"], tuple(exercise["targets"]),
                             resolve_bound(exercise["sets"]["min"], params), resolve_bound(exercise["sets"]["max"], params),
                             resolve_bound(exercise["reps"]["min"], params), resolve_bound(exercise["reps"]["max"], params),
                             render(exercise["instructions"], params))
        card = then.get("card")
        self.card: tuple[Any, ...] | None = None
        if card:
            referral = then.get("referral")
            self.card = (rule.indicator, render(card["summary"], params), render(card["detail"], params),
                         source_title, rule.section, rule.quote,
                         (tuple(referral["to"]), referral.get("timeframe", "routine"), render(referral["reason"], params),
                          render(referral["within"], params) if "within" in referral else None,
                          resolve_bound(referral["weeks"], params) if "weeks" in referral else None)
                         if referral else None)
        # the card without its uuid (each result puts its own first), with and without its referral
        # (a referral to a destination an earlier card already refers to is merged into that card)
        self.card_body: dict[str, Any] | None = None
        self.card_body_merged: dict[str, Any] | None = None
        if self.card is not None:
            self.card_body = self.new_card("")
            del self.card_body["uuid"]
            self.card_body_merged = {k: v for k, v in self.card_body.items() if k != "referral"}
        self.exercise_data = self.new_exercise() if self.exercise is not None else None
        # the same values as JSON, encoded from the very dicts each result gets
        self.finding_json = _COMPACT.encode(self.finding) if self.finding is not None else None
        self.exercise_json = _COMPACT.encode(self.exercise_data) if self.exercise_data is not None else None
        self.note_json = _COMPACT.encode(self.note) if self.note is not None else None
        # as JSON text after its uuid (from the uuid's closing quote): as the last card of a result, and
        # followed by the opening of the next card up to that card's uuid
        self.card_json: tuple[str, str] | None = None
        self.card_json_merged: tuple[str, str] | None = None
        if self.card_body is not None and self.card_body_merged is not None:
            self.card_json = _card_json(self.card_body)
            self.card_json_merged = _card_json(self.card_body_merged)

    def new_exercise(self) -> dict[str, Any]:
        ex_id, name, targets, sets_min, sets_max, reps_min, reps_max, instructions = self.exercise  # type: ignore[misc]
        return {"id": ex_id, "name": name, "targets": list(targets), "sets": {"min": sets_min, "max": sets_max},
                "reps": {"min": reps_min, "max": reps_max}, "instructions": instructions}

    def new_card(self, card_uuid: str) -> dict[str, Any]:
        indicator, summary, detail, label, section, quote, referral = self.card  # type: ignore[misc]
        card: dict[str, Any] = {"uuid": card_uuid, "rule": self.id, "indicator": indicator, "summary": summary,
                                "detail": detail, "source": {"label": label, "section": section, "quote": quote}}
        if referral is not None:
            card["referral"] = {"to": list(referral[0]), "timeframe": referral[1], "reason": referral[2]}
            if referral[3] is not None:
                card["referral"]["within"] = referral[3]
            if referral[4] is not None:
                card["referral"]["weeks"] = referral[4]
        return card


class Assembler:
    """Result assembly for one rule set under fixed parameters.

    Everything that does not depend on the patient is prepared once: each rule's rendered
    outputs and their JSON text (on its first firing), what a set of fired rules says under a
    screening verdict (`_Base`), and the rest of a result for given open questions and
    contradictions (`_Plan`). `assess` then adds only the patient's own parts: id, card UUIDs
    (from a hash state prepared per rule set) and missing answers.
    """

    def __init__(self, *, info: RuleSetInfo, version: str, rules: Mapping[str, Rule], needed: frozenset[str],
                 params: Mapping[str, Any], params_key: str,
                 scope: Scope = NO_SCOPE,
                 review: Mapping[str, Any] | None = None, stands_alone: Sequence[str] = (),
                 questions: Sequence[tuple[Question, Rule]] = ()) -> None:
        self._info = info
        self._stands_alone = frozenset(URGENCY_ORDER.index(u) for u in stands_alone)
        self._version = version
        self._rules = rules
        self._needed = needed
        self._params = params
        self._params_key = params_key
        self._card_rank = {r.id: i for i, r in enumerate(sorted(rules.values(), key=card_order))}
        self._priority_rank = {r.id: i for i, r in enumerate(sorted(rules.values(), key=lambda r: (-r.priority, r.id)))}
        self._red_flag_keys = tuple(f.key for f in patient_fields().values() if f.path.startswith(RED_FLAG_PREFIX))
        self._parameters = tuple((name, params[name]) for name in sorted(params))
        try:
            self._uuid_prefix: Any = hashlib.sha1(CARD_NAMESPACE_BYTES + f"{info.digest}|{params_key}|".encode())
        except UnicodeEncodeError:  # a parameter that is not valid Unicode: fails at the first card, as it always did
            self._uuid_prefix = None
        self._card_tags = card_tags(info.digest, rules)
        self._outputs: dict[str, _RuleOutputs] = {}
        self._json_head = _COMPACT.encode({"cdss_version": version, "rule_set": {
            "id": info.id, "version": info.version, "digest": info.digest}})[:-1]
        self._json_parameters = _COMPACT.encode(dict(self._parameters))
        self._scope = {"statement": scope.statement, "not_covered": list(scope.not_covered)}
        self._review = dict(review) if review is not None else {"status": "pending", "pending_packs": []}
        self._json_scope = _COMPACT.encode(self._scope)
        self._json_review = _COMPACT.encode(self._review)
        self._json_end = (',"review":' + self._json_review + ',"scope":' + self._json_scope
                          + ',"parameters":' + self._json_parameters + "}")
        # JSON text of the small values results repeat: urgencies, verdicts, phases, notes, and the
        # field paths of missing answers (filled in advance; when every path is written as it is,
        # `_plain_paths`, `_to_json` joins the paths themselves instead)
        self._json_text: dict[Any, str] = {path: _COMPACT.encode(path) for path in patient_fields()}
        self._plain_paths = all(text == f'"{path}"' for path, text in self._json_text.items())
        self._rule_set = {"id": info.id, "version": info.version, "digest": info.digest}
        self._question_pairs = tuple(questions)
        # each question as it appears in a result, for either thing it could change: data and JSON text
        self._question_data = {(index, change): {"field": q.field, "reason": render(q.reason, params), "could_change": change}
                               for index, (q, _) in enumerate(self._question_pairs) for change in ("urgency", "plan")}
        self._question_json = {key: _COMPACT.encode(value) for key, value in self._question_data.items()}
        self._parameter_values = dict(self._parameters)
        self._red_flags_of = operator.itemgetter(*self._red_flag_keys) if len(self._red_flag_keys) > 1 else \
            (lambda fact: tuple(fact[key] for key in self._red_flag_keys))
        self._screenings: dict[tuple[str, ...], str] = {}
        self._all_needed = needed >= set(patient_fields())
        # (open questions, urgency) -> (ranked (index, could_change), the questions as data, as JSON text)
        self._rankings: dict[tuple[tuple[int, ...], int], tuple[list[tuple[int, str]], list[dict[str, Any]], str]] = {}
        self._plans: dict[tuple[Any, ...], _Plan] = {}
        self._bases: dict[tuple[Any, ...], _Base] = {}
        self._joins: dict[tuple[str, ...], str] = {}

    def _prepare(self, rule_id: str) -> _RuleOutputs:
        outputs = _RuleOutputs(self._rules[rule_id], self._card_rank[rule_id], self._priority_rank[rule_id],
                               self._params, self._info.source_title, self._card_tags[rule_id])
        self._outputs[rule_id] = outputs  # idempotent: a concurrent duplicate is identical
        return outputs

    def assess(self, *, fired: set[str], fact: Mapping[str, Any], unknown: Sequence[str], patient: Mapping[str, Any],
               trace: list[dict[str, Any]] | None, questions: Sequence[int] = (),
               conflicts: Sequence[Conflict] = (), answers: str | None = None) -> Assessment:
        """The Assessment for one patient; its `to_json()` splices prepared JSON texts.

        `answers` is `patient.answers_text` of the patient's fact before contradictions were read
        as unknown (`patient.prepare` gives it; the card UUIDs hash it); by default, of `fact`.

        `questions` are indexes into the `questions` pairs given to the constructor (the open
        ones, from `coherence.QuestionFinder.open`). Everything but the patient id and the card
        UUIDs and the missing answers is a function of the fired rules, the red-flag screening,
        the open questions and the contradictions: that part (a `_Plan`) is worked out once per
        distinct combination and shared, read-only, by every result built from it.
        """
        pending = self.pending(fired, fact, unknown, patient, tuple(questions), conflicts,
                               answers_text(fact) if answers is None else answers)
        if trace is None:
            return pending_assessment(pending)
        plan = pending[1]
        result = self._result(pending)
        for step in trace:
            rule_id = step["rule"]
            if rule_id in plan.suppressed:
                step["suppressed_by"] = plan.suppressed[rule_id]
                if rule_id in plan.tier_suppressed:
                    step["stands_alone"] = result["urgency"]
            if rule_id in plan.merged:
                step["referral_merged_into"] = plan.merged[rule_id]
        result["trace"] = trace
        return Assessment(result, alone=plan.alone)

    def pending(self, fired: set[str], fact: Mapping[str, Any], unknown: Sequence[str], patient: Mapping[str, Any],
                questions: tuple[int, ...], conflicts: Sequence[Conflict], answers: str) -> _Pending:
        """`assess` without a trace, up to the result not built yet (`pending_assessment` makes it an
        Assessment): positional, for the batch path, which calls it once per patient.

        The card UUIDs (UUIDv8, RFC 9562) are each rule's tag (`card_tags`) followed by 90 bits of
        one SHA-1 per patient over the rule-set digest, parameters, patient id (JSON, ASCII) and
        `answers` (`patient.answers_text`: every field's value in schema order, so key order and
        null-versus-absent do not matter): one hash per result, not per card (docs/SERVICE.md).
        """
        flags = self._red_flags_of(fact)
        screening = self._screenings.get(flags)
        if screening is None:
            screening = self._screenings[flags] = screening_verdict(flags)  # at most 3^flags entries
        key = (frozenset(fired), screening, questions, tuple([c.id for c in conflicts]) if conflicts else ())
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(fired, screening, questions, conflicts)
            _remember(self._plans, key, plan)
        shown = plan.shown
        if shown:
            state = self._uuid_prefix
            if state is None:  # raises the UnicodeEncodeError its construction caught
                state = hashlib.sha1(CARD_NAMESPACE_BYTES + f"{self._info.digest}|{self._params_key}|".encode())
            state = state.copy()
            # hashed as UTF-8 (docs/SERVICE.md): the id JSON-escaped to ASCII, the answers as `answers_text` spells them
            state.update(f"{encode_ascii(patient['patient_id']) if 'patient_id' in patient else 'null'}|{answers}|".encode())
            a, b, variant, c, d = _TAIL_PIECES(state.hexdigest())
            tail = f"-{a}-8{b}-{_VARIANT[variant]}{c}-{d}"  # each card's uuid is its rule's tag + this
        else:
            tail = ""
        if self._all_needed:  # every field is read by some rule (the bundled rules): all unknowns are missing
            # the patient's own list (prepare made it), never handed out uncopied
            missing = unknown if type(unknown) is list else list(unknown)
        else:
            needed = self._needed
            missing = [path for path in unknown if path in needed]
        return (self, plan, patient.get("patient_id", _NO_ID), tail, missing)

    def _result(self, pending: _Pending) -> dict[str, Any]:
        """The result dict (key order as in the contract); its parts other than the patient's are the plan's, shared."""
        _, plan, patient_id, tail, missing = pending
        result: dict[str, Any] = {"cdss_version": self._version, "rule_set": self._rule_set}
        if patient_id is not _NO_ID:
            result["patient_id"] = patient_id
        result.update(plan.tail)
        result["cards"] = [{"uuid": o.uuid_tag + tail, **body} for o, body in zip(plan.shown, plan.card_bodies)]
        result["missing"] = missing
        return result

    def _plan(self, fired: set[str], screening: str, questions: Sequence[int], conflicts: Sequence[Conflict]) -> _Plan:
        """The patient-independent part of a result: the rules' part (`_base`, shared by every plan with
        these fired rules and this screening), then the open questions and the contradictions.

        Open questions are ranked (could raise urgency first) and may lift urgency from none to
        self-care; a plan says what to do, or why there is none (issue 17).
        """
        base_key = (frozenset(fired), screening)
        base = self._bases.get(base_key)
        if base is None:
            base = self._base(fired, screening)
            _remember(self._bases, base_key, base)
        urgency = base.urgency
        if base.alone:  # `stands_alone:` nothing is asked
            ranked: list[tuple[int, str]] = []
            asked: list[dict[str, Any]] = []
            questions_json = ""
        else:
            ranking = self._rankings.get((tuple(questions), urgency))
            if ranking is None:
                ranked = self._ranked_questions(questions, urgency)
                ranking = (ranked, [self._question_data[index, change] for index, change in ranked],
                           ",".join([self._question_json[index, change] for index, change in ranked]))
                _remember(self._rankings, (tuple(questions), urgency), ranking)
            ranked, asked, questions_json = ranking
        if urgency < QUESTION_FLOOR and any(change == "urgency" for _, change in ranked):
            urgency = QUESTION_FLOOR
        negative = screening == "negative"
        exercises, notes, phase = base.exercises, base.notes, base.phase
        if base.alone:  # an urgency that stands alone (emergency) withholds exercise advice, red flag or not
            status = "withheld"
        elif negative and (exercises or notes):
            status = "recommended"
        elif negative:
            gated = any(self._question_pairs[index][1].gated_by_screening for index in questions)
            status = "pending-answers" if gated else "not-indicated"
            phase = None
        else:
            status = PLAN_STATUS[screening]
        if status != "recommended":
            exercises, notes, phase = [], [PLAN_NOTE_ALONE if base.alone and negative else PLAN_NOTE[status]], None

        conflict_data = [{"fields": list(c.fields), "message": c.message} for c in conflicts]
        tail: dict[str, Any] = {
            "urgency": URGENCY_ORDER[urgency],
            "red_flag_screening": screening,
            "findings": base.findings,
            "plan": {"status": status, "phase": phase, "exercises": exercises, "notes": notes},
            "cards": [],
            "missing": [],
            "questions": asked,
            "conflicts": conflict_data,
            "review": self._review,
            "scope": self._scope,
            "parameters": self._parameter_values,
        }
        text = self._text
        recommended = status == "recommended"
        # JSON text in parts: the long ones (findings, exercises, notes, review, scope, parameters) are
        # the base's or the rule set's own strings, shared, so a plan costs little memory
        # the whole result as a list of texts with empty slots for the patient's own parts (`_to_json`)
        parts = [self._json_head, "",  # slot: the patient id
                 ',"urgency":' + text(tail["urgency"]) + ',"red_flag_screening":' + text(screening) + ',"findings":[',
                 base.findings_json,
                 '],"plan":{"status":' + text(status) + ',"phase":' + text(phase) + ',"exercises":[',
                 base.exercises_json if recommended else "",
                 '],"notes":[',
                 base.notes_json if recommended else text(notes[0]),
                 ']},"cards":[' + ('{"uuid":"' if base.card_json else "")]
        first_uuid = len(parts)
        for o, card in zip(base.shown, base.card_json):
            parts += (o.uuid_tag, "", card)  # slot: the rest of the card's uuid, the patient's own
        missing_slot = len(parts) + 1
        parts += ('],"missing":[', "",  # slot: the missing answers
                  '],"questions":[', questions_json,
                  '],"conflicts":' + (_COMPACT.encode(conflict_data) if conflicts else "[]"), self._json_end)
        return _Plan(tail=tail, shown=base.shown, card_bodies=base.card_bodies, json_parts=tuple(parts),
                     uuid_slots=slice(first_uuid + 1, missing_slot - 1, 3), missing_slot=missing_slot,
                     alone=base.alone, suppressed=base.suppressed, tier_suppressed=base.tier_suppressed,
                     merged=base.merged)

    def _base(self, fired: set[str], screening: str) -> _Base:
        """What the fired rules say under this screening verdict, before questions and contradictions.

        Coherence (issue 17): a fired rule that another fired rule `supersedes` gives way (its
        card, referral and plan outputs are not shown; its finding stays); among the shown cards
        at most one referral reaches each destination (the most urgent timeframe, then card
        order, keeps it). A result whose urgency the rule set declares `stands_alone` (e.g.
        emergency) shows only the cards of rules at that urgency (the others give way to its
        heaviest rule) and asks nothing.
        """
        negative = screening == "negative"
        known = self._outputs
        outputs = [known.get(rule_id) or self._prepare(rule_id) for rule_id in fired]
        outputs.sort(key=_by_priority)

        suppressed: dict[str, str] = {}
        for o in outputs:  # priority order: the heaviest rule claims first
            if o.id in suppressed:
                continue
            for other in o.supersedes:
                if other in fired and other not in suppressed:
                    suppressed[other] = o.id
        active = [o for o in outputs if o.id not in suppressed] if suppressed else outputs

        exercises: list[dict[str, Any]] = []
        notes: list[str] = []
        phase = None
        if negative:
            for o in active:
                if o.has_phase:
                    phase = o.phase
                    break
            for o in active:
                if o.exercise_data is not None:
                    exercises.append(o.exercise_data)
                if o.note is not None:
                    notes.append(o.note)
        # the same, as JSON text (priority order: `active` keeps the order of `outputs`)
        exercises_json = self._joined([o.exercise_json for o in active if o.exercise_json is not None])
        notes_json = self._joined([o.note_json for o in active if o.note_json is not None])
        urgency = URGENCY_FLOOR[screening]
        for o in outputs:
            if o.urgency > urgency:
                urgency = o.urgency
        alone = urgency in self._stands_alone
        tier_suppressed: set[str] = set()
        if alone:  # `stands_alone:` this tier's rules speak alone: lower cards give way
            leader = next((o.id for o in active if o.urgency == urgency), None)
            if leader is not None:
                for o in active:
                    if o.urgency < urgency:
                        suppressed[o.id] = leader
                        tier_suppressed.add(o.id)
                active = [o for o in active if o.id not in suppressed]

        shown = [o for o in active if o.card is not None and (negative or not o.gated)]
        shown.sort(key=_by_card)
        merged: dict[str, str] = {}
        claimed: set[str] = set()
        claimed_by: dict[str, str] = {}
        for o in sorted((o for o in shown if o.card[6] is not None), key=_by_referral):  # type: ignore[index]
            destinations = set(o.card[6][0])  # type: ignore[index]
            owner = next((d for d in destinations if d in claimed), None)
            if owner is not None:
                merged[o.id] = claimed_by[owner]
            else:
                for d in destinations:
                    claimed.add(d)
                    claimed_by[d] = o.id
        return _Base(
            urgency=urgency, alone=alone, findings=[o.finding for o in outputs if o.finding is not None],
            findings_json=",".join([o.finding_json for o in outputs if o.finding_json is not None]),
            exercises=exercises, notes=notes, phase=phase, exercises_json=exercises_json, notes_json=notes_json,
            shown=tuple(shown), merged=merged, suppressed=suppressed, tier_suppressed=frozenset(tier_suppressed),
            card_bodies=tuple(o.card_body_merged if o.id in merged else o.card_body for o in shown),  # type: ignore[misc]
            card_json=tuple((o.card_json_merged if o.id in merged else o.card_json)[index + 1 == len(shown)]  # type: ignore[index]
                            for index, o in enumerate(shown)))

    def _ranked_questions(self, questions: Sequence[int], urgency: int) -> list[tuple[int, str]]:
        """Open questions (indexes into the pairs) with what each could change, most important first:
        could raise urgency, then the heavier rule, then priority; one per field."""
        ranked = []
        for i, index in enumerate(questions):
            question, rule = self._question_pairs[index]
            weight = URGENCY_ORDER.index(rule.urgency)
            lifts = weight > urgency
            ranked.append(((not lifts, -weight, -rule.priority, i), index, question.field, lifts))
        ranked.sort(key=operator.itemgetter(0))
        out: list[tuple[int, str]] = []
        seen: set[str] = set()
        for _, index, field, lifts in ranked:
            if field in seen:
                continue
            seen.add(field)
            out.append((index, "urgency" if lifts else "plan"))
        return out

    def _joined(self, texts: list[str]) -> str:
        """`",".join(texts)`, one shared str per distinct list (many bases recommend the same exercises)."""
        key = tuple(texts)
        joined = self._joins.get(key)
        if joined is None:
            joined = ",".join(texts)
            _remember(self._joins, key, joined)
        return joined

    def _text(self, value: Any) -> str:
        text = self._json_text.get(value)
        if text is None:
            text = self._json_text[value] = _COMPACT.encode(value)
        return text

    def _to_json(self, pending: _Pending) -> str:
        """`json.dumps(result, ensure_ascii=False, separators=(",", ":"))` of `_result(pending)`, without
        building it: the plan's JSON texts with the patient id, card UUIDs and missing answers put in
        their slots, then joined (one join copies each long text once)."""
        _, plan, patient_id, tail, missing = pending
        parts = list(plan.json_parts)
        if patient_id is not _NO_ID:  # a str (schema): JSONEncoder(ensure_ascii=False) encodes it so
            parts[1] = ',"patient_id":' + encode_text(patient_id)
        if tail:
            parts[plan.uuid_slots] = [tail] * len(plan.shown)  # a UUID needs no escaping
        if missing:
            if self._plain_paths:  # field paths that JSON writes as they are: one join
                parts[plan.missing_slot] = '"' + '","'.join(missing) + '"'
            else:
                texts = self._json_text
                parts[plan.missing_slot] = ",".join([texts.get(path) or self._text(path) for path in missing])
        return "".join(parts)


_NO_ID: Any = object()
"""The patient id of a pending result whose document has no `patient_id` (a result then has no such key)."""


_Pending = tuple["Assembler", "_Plan", Any, str, list[str]]
"""A result not built yet: (assembler, plan, patient id or _NO_ID, the card UUIDs' common tail after
each rule's tag, missing answers), its plan and the parts that are the patient's own. JSON is
spliced from it directly; the dict is built on first use. A plain tuple: one is made per patient,
and a class's `__init__` cost 0.3 µs more (measured)."""


def pending_assessment(pending: _Pending) -> Assessment:
    """An Assessment whose dict is built on first use, made without a call of `__init__` (one per
    patient); it sets every slot (a test checks that no slot is left unset)."""
    assessment = _new_object(Assessment)
    assessment._built = None
    assessment._pending = pending
    assessment._alone = pending[1].alone
    return assessment


_new_object = object.__new__


PLAN_MEMO_LIMIT = 8192
"""Entries per result memo of a rule set (plans, bases, question rankings; about 2 KB a plan): a full
memo is emptied and fills again with what the population needs now, so memory stays bounded."""


def _remember(memo: dict[Any, Any], key: Any, value: Any) -> None:
    """Store in a bounded memo (see PLAN_MEMO_LIMIT)."""
    if len(memo) >= PLAN_MEMO_LIMIT:
        memo.clear()
    memo[key] = value


def _card_json(body: Mapping[str, Any]) -> tuple[str, str]:
    """A card's JSON text from the closing quote of its uuid: (followed by the next card, the last card)."""
    text = '"' + _COMPACT.encode({"uuid": "", **body})[len('{"uuid":""'):]
    return text + ',{"uuid":"', text


class _Base(NamedTuple):
    """What one set of fired rules says under one screening verdict (shared by the plans built on it)."""

    urgency: int
    alone: bool
    findings: list[dict[str, Any]]
    findings_json: str
    exercises: list[dict[str, Any]]
    notes: list[str]
    phase: str | None
    exercises_json: str
    notes_json: str
    shown: tuple[_RuleOutputs, ...]
    merged: dict[str, str]
    suppressed: dict[str, str]
    tier_suppressed: frozenset[str]
    card_bodies: tuple[dict[str, Any], ...]
    card_json: tuple[str, ...]  # each card's JSON after its uuid, up to the next card's uuid (`_card_json`)


class _Plan(NamedTuple):
    """The part of a result that does not depend on the patient document, shared read-only by
    every Assessment built from it (Assessment never hands its data out uncopied)."""

    tail: dict[str, Any]
    shown: tuple[_RuleOutputs, ...]
    card_bodies: tuple[dict[str, Any], ...]
    json_parts: tuple[str, ...]
    uuid_slots: slice
    missing_slot: int
    alone: bool
    suppressed: dict[str, str]
    tier_suppressed: frozenset[str]
    merged: dict[str, str]


def _by_referral(o: _RuleOutputs) -> tuple[int, int, int]:
    referral = o.card[6]  # type: ignore[index]
    return TIMEFRAME_ORDER.index(referral[1]), referral[4] or 0, o.card_rank


_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
"""A hex digit with its top two bits set to the RFC 9562 variant (10xx)."""

_TAIL_PIECES = operator.itemgetter(slice(0, 4), slice(4, 7), 7, slice(8, 11), slice(11, 23))
"""The pieces of a SHA-1 hex digest a card UUID's last four groups are written from (90 bits: 22 hex
digits and two bits of the variant digit), in one call."""

_by_priority = operator.attrgetter("priority_rank")


def _by_indicator(card: Mapping[str, Any]) -> int:
    return INDICATOR_ORDER.index(card["indicator"])


_by_card = operator.attrgetter("card_rank")


class Assessment:
    """The outcome of evaluating one patient; immutable, with JSON and CDS Hooks renderings.

    Its data may share parts with other Assessments built from the same plan, so nothing here
    hands that data out without copying it.
    """

    __slots__ = ("_alone", "_built", "_pending")

    def __init__(self, data: dict[str, Any], *, alone: bool = False) -> None:
        # `pending_assessment` makes the other kind, whose dict is built on first use: it sets these same slots
        self._built: dict[str, Any] | None = data
        self._pending: _Pending | None = None  # the Assembler's parts: `to_json()` splices them
        self._alone = alone  # the urgency is a `stands_alone` tier: its cards speak alone (to_cds_hooks)

    @property
    def _data(self) -> dict[str, Any]:
        data = self._built
        if data is None:
            pending = self._pending
            data = self._built = pending[0]._result(pending)  # type: ignore[index, arg-type]
        return data

    def __reduce__(self) -> tuple[Any, ...]:
        return _assessment, (self._data, self._alone)

    @property
    def urgency(self) -> str:
        # a batch asks every result for it: read from the shared plan rather than build the result
        pending = self._pending
        return str((pending[1].tail if self._built is None and pending is not None else self._data)["urgency"])

    @property
    def red_flag_screening(self) -> str:
        pending = self._pending
        return str((pending[1].tail if self._built is None and pending is not None else self._data)["red_flag_screening"])

    @property
    def findings(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._data["findings"])

    @property
    def plan(self) -> dict[str, Any]:
        return copy.deepcopy(self._data["plan"])

    @property
    def cards(self) -> list[dict[str, Any]]:
        return copy.deepcopy(self._data["cards"])

    @property
    def missing(self) -> list[str]:
        return list(self._data["missing"])

    @property
    def fired(self) -> list[str]:
        """Ids of the rules that fired; known only for an assessment evaluated with trace=True."""
        if "trace" in self._data:
            return [t["rule"] for t in self._data["trace"] if t["fired"]]
        raise AttributeError("fired rules are known only when evaluated with trace=True")

    def to_dict(self) -> dict[str, Any]:
        """A deep copy of the result document."""
        return copy.deepcopy(self._data)

    def to_json(self, indent: int | None = None) -> str:
        """The result as JSON; byte-identical for identical rules, parameters and patient."""
        if indent is None:
            pending = self._pending
            return pending[0]._to_json(pending) if pending is not None else _COMPACT.encode(self._data)
        return json.dumps(self._data, ensure_ascii=False, indent=indent)

    def to_cds_hooks(self) -> dict[str, Any]:
        """A strict CDS Hooks response: `{"cards": [...]}`; cdss data under a reverse-domain extension.

        Every card sorted by indicator, critical -> warning -> info (the CDS Hooks contract), stably:
        within one indicator the rule cards come first, then the result-level cards a host that
        shows only cards must still see (issue 17): contradictory answers, open questions, a rule
        set not yet signed off, and what this screen does not cover.
        """
        data = self._data
        cards = []
        for card in self._data["cards"]:
            topic = {"system": TOPIC_SYSTEM, "code": card["rule"], "display": card["source"]["section"]}
            source = {"label": card["source"]["label"], "topic": topic}
            extension: dict[str, Any] = {"rule": card["rule"], "quote": card["source"]["quote"],
                                         "rule_set": data["rule_set"], "urgency": data["urgency"],
                                         "red_flag_screening": data["red_flag_screening"]}
            if "referral" in card:
                extension["referral"] = card["referral"]
            hooks_card = {"uuid": card["uuid"], "summary": card["summary"], "detail": card["detail"],
                          "indicator": card["indicator"], "source": source,
                          "extension": {EXTENSION_KEY: extension}}
            # the spec forbids empty strings: a parameter may render an optional text to "" (omit it)
            if not hooks_card["detail"]:
                del hooks_card["detail"]
            if not topic["display"]:
                del topic["display"]
            cards.append(hooks_card)
        cards.extend(self._coherence_cards())
        cards.sort(key=_by_indicator)  # stable: critical -> warning -> info, each in the order added
        # the cards embed parts of this result, which results built from one plan share: the caller gets its own copy
        return copy.deepcopy({"cards": cards})

    def _coherence_cards(self) -> list[dict[str, Any]]:
        data = self._data
        label = "cdss rule set " + data["rule_set"]["id"] + " " + data["rule_set"]["version"]
        seed = canonical({k: data.get(k) for k in ("rule_set", "patient_id", "questions", "conflicts", "review", "scope")})
        out: list[dict[str, Any]] = []

        def add(kind: str, indicator: str, summary: str, detail: str, payload: Any) -> None:
            out.append({"uuid": _uuid5(f"{kind}|{seed}"), "summary": summary, "detail": detail,
                        "indicator": indicator, "source": {"label": label, "topic": {"system": TOPIC_SYSTEM, "code": kind, "display": kind}},
                        "extension": {EXTENSION_KEY: {kind: payload, "kind": kind, "rule_set": data["rule_set"],
                                                      "urgency": data["urgency"],
                                                      "red_flag_screening": data["red_flag_screening"]}}})

        conflicts = data.get("conflicts", [])
        if conflicts and not self._alone:  # an emergency stands alone: the answers that conflict stay in `conflicts`
            add("conflicts", "warning", "Some answers contradict each other: check them; they were not used",
                "\n".join(f"- {c['message']}" for c in conflicts), conflicts)
        questions = data.get("questions", [])
        if questions:
            lifts = [q for q in questions if q["could_change"] == "urgency"]
            summary = (f"Answer {len(questions)} more question{'s' if len(questions) > 1 else ''}: "
                       + ("the advice could become more urgent" if lifts else "the exercise plan depends on them"))
            add("questions", "warning" if lifts else "info", summary,
                "\n".join(f"- **{field_label(q['field'])}**: {q['reason']}" for q in questions), questions)
        review = data.get("review")
        if review and review.get("status") != "signed-off":
            pending = ", ".join(review.get("pending_packs", [])) or "unknown"
            add("review", "warning", "Not yet clinically reviewed: use this advice with professional judgement",
                f"These rule packs await clinical sign-off: {pending}.", review)
        scope = data.get("scope")
        if scope:
            detail = scope["statement"]
            if scope.get("not_covered"):
                detail += "\n\nNot covered here:\n" + "\n".join(f"- {item}" for item in scope["not_covered"])
            add("scope", "info", "What this screen does not check: other serious causes of back pain", detail, scope)
        return out

    @property
    def questions(self) -> list[dict[str, Any]]:
        """Open questions that could raise the urgency or change the plan, most important first."""
        return copy.deepcopy(self._data.get("questions", []))

    @property
    def conflicts(self) -> list[dict[str, Any]]:
        """Contradictory answers found (read as unknown by the rules)."""
        return copy.deepcopy(self._data.get("conflicts", []))

    def __repr__(self) -> str:
        return f"<Assessment urgency={self.urgency} screening={self.red_flag_screening} cards={len(self._data['cards'])}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Assessment) and self._data == other._data

    __hash__ = None  # type: ignore[assignment]


def _assessment(data: dict[str, Any], alone: bool) -> Assessment:
    """Unpickling (batch workers send results to their parent): keyword arguments need a function."""
    return Assessment(data, alone=alone)
