"""The fast paths of evaluation (issue 15) equal their references, and memoised work never leaks
between patients: generated Python conditions vs the reference interpreter, the one-template fact
encoder vs json.dumps, result plans shared between results, card UUIDs."""

from __future__ import annotations

import copy
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import cdss
from cdss.coherence import ConflictFinder, find_conflicts, read_as_unknown
from cdss.conditions import All, AnyOf, Condition, Leaf, Not, ParamRef, evaluate, python_expression
from cdss.fields import UNKNOWN, patient_fields
from cdss.patient import encode_fact, flatten, prepare
from cdss.result import CARD_NAMESPACE, card_tags
from tests.helpers import documented_answers
from tests.strategies import ABSENT, coherence_patients, patients_with_screening, put, valid_patients

FIELDS = patient_fields()
BASIC = cdss.load_rules(Path(__file__).parent / "fixtures" / "basic")
PARAMS = {"low": 2, "high": 7, "flag": True, "stage": "activation"}


# ---------------------------------------------------------------- generated conditions


def _leaves() -> st.SearchStrategy[Leaf]:
    def leaf_for(path: str) -> st.SearchStrategy[Leaf]:
        fld = FIELDS[path]
        if fld.kind == "tristate":
            return st.builds(Leaf, st.just(fld), st.just("is"),
                             st.sampled_from([True, False, "unknown", "known", ParamRef("flag")]))
        if fld.kind == "enum":
            values = st.sampled_from([*fld.values, ParamRef("stage")])
            return st.one_of(st.builds(Leaf, st.just(fld), st.just("equals"), values),
                             st.builds(Leaf, st.just(fld), st.just("in"), st.lists(st.sampled_from(fld.values),
                                                                                    min_size=1).map(tuple)),
                             st.builds(Leaf, st.just(fld), st.just("is"), st.sampled_from(["unknown", "known"])))
        numbers = st.one_of(st.integers(-3, 60), st.floats(-5, 60, allow_nan=False), st.sampled_from(
            [ParamRef("low"), ParamRef("high")]))
        return st.one_of(st.builds(Leaf, st.just(fld), st.sampled_from(["gte", "gt", "lte", "lt", "equals"]), numbers),
                         st.builds(Leaf, st.just(fld), st.just("is"), st.sampled_from(["unknown", "known", True])))

    return st.sampled_from(sorted(FIELDS)).flatmap(leaf_for)


conditions: st.SearchStrategy[Condition] = st.recursive(
    _leaves(), lambda inner: st.one_of(st.lists(inner, min_size=1, max_size=4).map(lambda c: All(tuple(c))),
                                       st.lists(inner, min_size=1, max_size=4).map(lambda c: AnyOf(tuple(c))),
                                       inner.map(Not)), max_leaves=12)


@given(condition=conditions, docs=st.lists(valid_patients(), min_size=1, max_size=8))
def test_generated_python_condition_equals_the_reference_interpreter(condition: Condition, docs: list[Any]) -> None:
    compiled = eval(f"lambda f: {python_expression(condition, PARAMS)}")  # noqa: S307 - the code under test
    for doc in docs:
        fact, _ = flatten(doc)
        assert compiled(fact) == evaluate(condition, fact, PARAMS)


# ---------------------------------------------------------------- contradictions and the encoder


_FINDERS: dict[int, ConflictFinder] = {}


def _shared_finder(rules: cdss.RuleSet) -> ConflictFinder:
    return _FINDERS.setdefault(id(rules), ConflictFinder(rules.loaded.conflicts, rules.parameter_values))


@given(doc=st.one_of(valid_patients(), coherence_patients()))
def test_conflict_finder_equals_the_reference_and_the_fact_is_encoded_as_json_dumps(bundled: cdss.RuleSet,
                                                                                    doc: dict[str, Any]) -> None:
    _, fact, unknown, encoded, _ = prepare(doc)
    assert encoded == json.dumps(dict(fact, id="patient", kind="patient"))[:-1] == encode_fact(fact)
    declared = bundled.loaded.conflicts
    finder = _shared_finder(bundled)  # one finder for every example: its memo is held to the reference too
    hits = finder.find(fact)
    assert list(hits) == find_conflicts(declared, fact, bundled.parameter_values)
    read, paths = read_as_unknown(fact, unknown, hits)
    assert finder.read_as_unknown(fact, unknown, hits) == (read, paths)
    assert ConflictFinder(declared, bundled.parameter_values).read_as_unknown(fact, unknown, hits) == (read, paths)
    assert encode_fact(read) == json.dumps(dict(read, id="patient", kind="patient"))[:-1]
    assert paths == [p for p in FIELDS if p in set(unknown) | {f for c in hits for f in c.fields}]


@given(doc=valid_patients(), unknown=st.sets(st.sampled_from(sorted(FIELDS))))
def test_fact_encoder_with_any_fields_read_as_unknown(doc: dict[str, Any], unknown: set[str]) -> None:
    fact, _ = flatten(doc)
    for path in unknown:
        fld = FIELDS[path]
        if fld.kind == "integer":
            fact[fld.key], fact[fld.key + "__known"] = 0, "false"
        else:
            fact[fld.key] = UNKNOWN
    assert encode_fact(fact) == json.dumps(dict(fact, id="patient", kind="patient"))[:-1]


# ---------------------------------------------------------------- memoised plans


@given(before=st.lists(st.one_of(valid_patients(), coherence_patients(), patients_with_screening("negative")),
                       max_size=8),
       doc=st.one_of(valid_patients(), coherence_patients(), patients_with_screening("negative")),
       trace=st.booleans(), which=st.sampled_from(["bundled", "basic"]))
def test_a_result_does_not_depend_on_what_was_evaluated_before(bundled: cdss.RuleSet, before: list[Any],
                                                               doc: dict[str, Any], trace: bool, which: str) -> None:
    """Plans, open questions and contradictions are memoised per rule set: a rule set that has seen
    other patients gives the same bytes as a fresh one (the bundled rules, and a small rule set
    whose red-flag rules declare no questions)."""
    loaded = bundled.loaded if which == "bundled" else BASIC.loaded
    fresh = cdss.RuleSet(loaded)
    seasoned = cdss.RuleSet(loaded)
    for other in before:
        seasoned.evaluate(other)
    list(seasoned.evaluate_many(before))
    assert seasoned.evaluate(doc, trace=trace).to_json() == fresh.evaluate(doc, trace=trace).to_json()
    # the spliced JSON text is exactly the standard serialisation of the result
    result = seasoned.evaluate(doc)
    assert result.to_json() == json.dumps(result.to_dict(), ensure_ascii=False, separators=(",", ":"))


def test_changing_what_a_result_hands_out_never_changes_another_result(bundled: cdss.RuleSet) -> None:
    """Results built from one plan share its parts: nothing handed out may be a way to change them."""
    doc = {"back_pain": {"present": True, "trend": "worsening"}, "exercise": {"stage": "activation",
                                                                                 "weeks_consistent": 9},
           "red_flags": {"significant_leg_weakness": False, "numbness_or_tingling_radiating_down_leg": False,
                         "sudden_bladder_or_bowel_control_loss": False}}
    expected = bundled.evaluate({**doc, "patient_id": "b"}).to_json()
    first = bundled.evaluate({**doc, "patient_id": "a"})
    assert first.cards and first.plan and first.findings is not None
    hooks = first.to_cds_hooks()
    for card in hooks["cards"]:
        extension = card["extension"]["invalid.cdss"]
        for value in extension.values():
            if isinstance(value, dict):
                value.clear()
            elif isinstance(value, list):
                value.append("tampered")
    for handed in (first.to_dict(), first.cards, first.plan, first.findings, first.questions, first.conflicts):
        if isinstance(handed, dict):
            for value in handed.values():
                if isinstance(value, (list, dict)):
                    value.clear()
            handed.clear()
        else:
            for item in handed:
                if isinstance(item, dict):
                    for value in item.values():
                        if isinstance(value, (list, dict)):
                            value.clear()
                    item.clear()
            handed.clear()
    assert bundled.evaluate({**doc, "patient_id": "b"}).to_json() == expected
    assert first.to_json() == json.dumps(first.to_dict(), ensure_ascii=False, separators=(",", ":"))


# ---------------------------------------------------------------- card UUIDs


def _uuids(rules: cdss.RuleSet, doc: dict[str, Any]) -> dict[str, str]:
    return {card["rule"]: card["uuid"] for card in rules.evaluate(doc).cards}


@given(doc=st.one_of(valid_patients(), coherence_patients()))
def test_card_uuids_ignore_key_order_and_null_versus_absent(bundled: cdss.RuleSet, doc: dict[str, Any]) -> None:
    reordered = {key: (dict(reversed(list(value.items()))) if isinstance(value, dict) else value)
                 for key, value in reversed(list(doc.items()))}
    nulls = copy.deepcopy(doc)
    for section, value in nulls.items():
        if isinstance(value, dict):
            for key in [k for k, v in value.items() if v is None]:
                del value[key]
    assert _uuids(bundled, doc) == _uuids(bundled, reordered) == _uuids(bundled, nulls)


@given(doc=coherence_patients(), path=st.sampled_from(sorted(FIELDS)), data=st.data())
def test_a_different_answer_gives_different_card_uuids(bundled: cdss.RuleSet, doc: dict[str, Any], path: str,
                                                       data: st.DataObject) -> None:
    fld = FIELDS[path]
    choices: list[Any] = [None, ABSENT]
    choices += [True, False] if fld.kind == "tristate" else list(fld.values) if fld.kind == "enum" else [0, 1, 5, 12]
    other = put(doc, path, data.draw(st.sampled_from(choices)))
    if flatten(other)[0] == flatten(doc)[0]:
        return  # the same answers (e.g. null for absent)
    before, after = _uuids(bundled, doc), _uuids(bundled, other)
    assert not set(before.values()) & set(after.values())


def test_card_namespace_is_the_documented_uuid5() -> None:
    assert CARD_NAMESPACE == uuid.uuid5(uuid.NAMESPACE_URL, "https://cdss.invalid/cards")


@given(doc=st.one_of(valid_patients(), coherence_patients()))
def test_card_uuid_is_the_documented_uuid8(bundled: cdss.RuleSet, doc: dict[str, Any]) -> None:
    """docs/SERVICE.md: UUIDv8, the rule's tag then 90 bits of SHA-1 over the rule-set digest, parameters,
    patient id and the answers as given (contradictory ones too); a host can recompute it to link feedback."""
    params = json.dumps(dict(bundled.parameter_values), sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    digest = bundled.info.digest
    patient_id = json.dumps(doc["patient_id"]) if "patient_id" in doc else "null"
    answers = documented_answers(flatten(doc)[0])
    h = hashlib.sha1(CARD_NAMESPACE.bytes + f"{digest}|{params}|{patient_id}|{answers}|".encode()).hexdigest()
    for card in bundled.evaluate(doc).cards:
        tag = hashlib.sha1(CARD_NAMESPACE.bytes + f"{digest}|{card['rule']}".encode()).hexdigest()[:8]
        variant = "89ab"[int(h[7], 16) % 4]
        assert card["uuid"] == f"{tag}-{h[0:4]}-8{h[4:7]}-{variant}{h[8:11]}-{h[11:23]}"
        # the same 122 bits as the layout says: version 8, RFC 9562 variant, and the digest's bits
        parsed = uuid.UUID(card["uuid"])
        assert parsed.version == 8 and parsed.variant == uuid.RFC_4122
        assert parsed.int >> 96 == int(tag, 16) and (parsed.int >> 80) & 0xFFFF == int(h[0:4], 16)


def test_card_tags_are_distinct_even_when_the_hash_collides() -> None:
    # one hex digit and 16 rules: collisions are certain, and every rule still gets its own tag
    ids = [f"rule-{n}" for n in range(16)]
    tags = card_tags("sha256:x", ids, digits=1)
    assert sorted(tags.values()) == list("0123456789abcdef")
    assert card_tags("sha256:x", reversed(ids), digits=1) == tags  # by rule id, not input order
    first = min(ids)
    assert tags[first] == hashlib.sha1(CARD_NAMESPACE.bytes + f"sha256:x|{first}".encode()).hexdigest()[:1]
    # a rule whose tag an earlier rule (by id) holds hashes "{digest}|{rule id}|1", "|2", ... (docs/SERVICE.md)
    taken: set[str] = set()
    rehashed = 0
    for rule_id in sorted(ids):
        name, retry = f"sha256:x|{rule_id}", 0
        while (tag := hashlib.sha1(CARD_NAMESPACE.bytes + name.encode()).hexdigest()[:1]) in taken:
            retry += 1
            name = f"sha256:x|{rule_id}|{retry}"
        rehashed += retry > 0
        taken.add(tag)
        assert tags[rule_id] == tag
    assert rehashed >= 5
    wide = card_tags("sha256:x", ids)
    assert all(wide[i] == hashlib.sha1(CARD_NAMESPACE.bytes + f"sha256:x|{i}".encode()).hexdigest()[:8] for i in ids)
    with pytest.raises(ValueError):
        card_tags("sha256:x", [*ids, "one-too-many"], digits=1)


def _documented_uuid(digest: str, params: str, patient_id: str, answers: str, rule_id: str) -> str:
    """docs/SERVICE.md, "Card UUIDs", as written there (no rehash: the bundled rules have no tag collision)."""
    tag = hashlib.sha1(CARD_NAMESPACE.bytes + f"{digest}|{rule_id}".encode()).hexdigest()[:8]
    h = hashlib.sha1(CARD_NAMESPACE.bytes + f"{digest}|{params}|{patient_id}|{answers}|".encode()).hexdigest()
    return f"{tag}-{h[0:4]}-8{h[4:7]}-{'89ab'[int(h[7], 16) % 4]}{h[8:11]}-{h[11:23]}"


def test_the_documented_card_uuid_example_is_what_evaluate_gives(bundled: cdss.RuleSet) -> None:
    text = (Path(__file__).parent.parent / "docs" / "SERVICE.md").read_text(encoding="utf-8")
    block = text[text.index("Worked example"):]
    block = block[block.index("```") + 3:]
    example = dict(line.split(":", 1) for line in block[:block.index("```")].strip().splitlines())
    example = {key.strip(): value.strip() for key, value in example.items()}
    doc = json.loads(example["document"])
    assert _documented_uuid(example["digest"], example["parameters"], example["patient id"], example["answers"],
                            example["rule"]) == example["uuid"], "the worked example does not follow its own recipe"
    result = bundled.evaluate(doc).to_dict()
    actual = {"digest": result["rule_set"]["digest"],
              "parameters": json.dumps(result["parameters"], sort_keys=True, ensure_ascii=False, separators=(",", ":")),
              "patient id": json.dumps(doc["patient_id"]), "answers": documented_answers(flatten(doc)[0]),
              "uuid": {card["rule"]: card["uuid"] for card in result["cards"]}.get(example["rule"])}
    assert {key: example[key] for key in actual} == actual, (
        "docs/SERVICE.md's worked example no longer matches the bundled rules (a rule or parameter changed?); "
        f"update it to: {actual}")


def test_parameters_change_the_card_uuids(bundled: cdss.RuleSet) -> None:
    doc = {"patient_id": "p-7", "back_pain": {"present": True}, "exercise": {"stage": "none"}}
    other = bundled.with_parameters({"professional_evaluation_within_weeks": 3})
    one, two = bundled.evaluate(doc).cards, other.evaluate(doc).cards
    assert one and [c["rule"] for c in one] == [c["rule"] for c in two]
    assert not {c["uuid"] for c in one} & {c["uuid"] for c in two}


def test_the_two_pass_path_gives_the_same_card_uuids(bundled: cdss.RuleSet, monkeypatch: pytest.MonkeyPatch) -> None:
    import cdss.patient

    docs = [json.loads(path.read_text()) for path in sorted((Path(__file__).parent.parent / "examples" / "patients").glob("*.json"))]
    fast = [bundled.evaluate(doc).to_json() for doc in docs]
    monkeypatch.setattr(cdss.patient, "_checked", None)  # prepare() then validates and flattens in two passes
    assert [bundled.evaluate(doc).to_json() for doc in docs] == fast
    assert sum(len(bundled.evaluate(doc).cards) for doc in docs) > 20


def test_parameters_that_cannot_be_hashed_fail_at_the_first_card(bundled: cdss.RuleSet) -> None:
    from cdss.result import Assembler

    assembler = bundled._assembler
    broken = Assembler.__new__(Assembler)
    broken.__dict__.update(assembler.__dict__)
    broken._uuid_prefix, broken._params_key = None, "{\"x\":\"\ud800\"}"  # a lone surrogate: not UTF-8
    prepared = bundled._prepare({"back_pain": {"present": True}})
    document, fact, unknown, _, conflicts, answers = prepared
    fired = bundled._durable().fire_encoded(prepared[3])
    with pytest.raises(UnicodeEncodeError):
        broken.assess(fired=fired, fact=fact, unknown=unknown, patient=document, trace=None,
                      questions=bundled._questions.open(fact, fired), conflicts=conflicts, answers=answers)
    # a result without cards hashes nothing, and does not fail
    assert not broken.assess(fired=set(), fact=fact, unknown=unknown, patient=document, trace=None).cards


def test_no_enum_value_of_the_patient_schema_holds_the_answers_separator() -> None:
    values = [value for fld in FIELDS.values() if fld.kind == "enum" for value in fld.values]
    assert values and not [value for value in values if "|" in value]


INTEGER_FIELDS = sorted(path for path, fld in FIELDS.items() if fld.kind == "integer")


@given(doc=coherence_patients(), field=st.sampled_from(INTEGER_FIELDS),
       values=st.lists(st.one_of(st.none(), st.integers(0, 60)), min_size=2, max_size=8))
def test_open_questions_memo_tells_numbers_apart_as_the_rules_do(bundled: cdss.RuleSet, doc: dict[str, Any],
                                                                  field: str, values: list[Any]) -> None:
    """The question memos key a number by the side of each threshold it is on: patients who differ
    only in that number get the open questions a finder that has seen none of them gives."""
    from cdss.coherence import QuestionFinder

    params = bundled.parameter_values
    seasoned = QuestionFinder(bundled.rules, params)
    engine = bundled._durable()
    for value in values:
        _, fact, _, encoded, _, _ = bundled._prepare(put(doc, field, value))
        fired = engine.fire_encoded(encoded)
        assert seasoned.open(fact, fired) == QuestionFinder(bundled.rules, params).open(fact, fired)


# ---------------------------------------------------------------- engine: rules known to durable-rules by short codes


@given(names=st.sets(st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True), min_size=1, max_size=300))
def test_every_rule_gets_its_own_code_of_one_width(names: set[str]) -> None:
    from cdss.engine import registered_definition

    definition = {name: {"all": [{"m": {"n": index}}]} for index, name in enumerate(sorted(names))}
    text, rule_of_code = registered_definition(definition)
    assert sorted(rule_of_code.values()) == sorted(names)
    assert len({len(code) for code in rule_of_code}) == 1
    assert len(next(iter(rule_of_code))) == (1 if len(names) <= 62 else 2)
    assert all(code.isalnum() and code.isascii() for code in rule_of_code)
    registered = json.loads(text)
    assert {rule_of_code[code]: body for code, body in registered.items()} == definition


def test_an_action_that_is_not_of_the_expected_shape_is_parsed_and_checked() -> None:
    from cdss.engine import _owned_rules

    rule_of_code = {"a": "first-rule", "b": "second-rule"}
    assert _owned_rules('{"b": {"m": {"id": "7", "kind": "patient"}}}', "7", rule_of_code) == ["second-rule"]
    with pytest.raises(cdss.EngineError, match="does not exist"):
        _owned_rules('{"zz": {"m": {"id": "7"}}}', "7", rule_of_code)
    with pytest.raises(cdss.EngineError, match="another patient"):
        _owned_rules('{"a": {"m": {"id": "8"}}}', "7", rule_of_code)


def test_a_pending_assessment_sets_every_slot(bundled: cdss.RuleSet) -> None:
    """`pending_assessment` skips `__init__`: a slot added to Assessment must be set there too."""
    result = bundled.evaluate({"back_pain": {"present": True}})
    for slot in type(result).__slots__:
        getattr(result, slot)  # AttributeError if left unset
    assert result._pending is not None and result._built is None
    assert result.to_json() == json.dumps(result.to_dict(), ensure_ascii=False, separators=(",", ":"))


@given(docs=st.lists(st.one_of(valid_patients(), coherence_patients()), min_size=1, max_size=6))
def test_a_pending_result_reads_urgency_and_screening_from_its_plan(bundled: cdss.RuleSet, docs: list[Any]) -> None:
    """`urgency` and `red_flag_screening` do not build the result (a batch asks every result for them)."""
    for result in bundled.evaluate_many(docs):
        assert isinstance(result, cdss.Assessment)
        urgency, screening = result.urgency, result.red_flag_screening
        assert result._built is None  # still not built
        data = result.to_dict()
        assert (urgency, screening) == (data["urgency"], data["red_flag_screening"])
        assert (result.urgency, result.red_flag_screening) == (urgency, screening)  # and once built


def test_valid_documents_make_no_reference_cycles() -> None:
    """The CLI batch freezes what a chunk leaves (cli.batch.settle_garbage): evaluating a valid
    document must leave no cyclic garbage behind, or the batch would rely on the collector for it.
    In a fresh interpreter: threads left by other tests in this one would make garbage of their own."""
    import subprocess
    import sys

    script = r"""
import gc, json, pathlib, sys
import cdss
rules = cdss.load_rules(None)
docs = [json.loads(p.read_text()) for p in sorted(pathlib.Path(sys.argv[1]).glob("*.json"))]
for result in rules.evaluate_many(docs):  # warm: memos, compiled code
    result.to_json()
gc.collect()
gc.disable()
for _ in range(3):
    for result in rules.evaluate_many(docs):
        result.to_json(), result.to_dict(), result.to_cds_hooks(), result.urgency
    for doc in docs:
        rules.evaluate(doc).to_json()
print(len(docs), gc.collect())
"""
    examples = Path(__file__).parent.parent / "examples" / "patients"
    done = subprocess.run([sys.executable, "-c", script, str(examples)], capture_output=True, text=True, check=True)
    count, garbage = map(int, done.stdout.split())
    assert count >= 10 and garbage == 0
