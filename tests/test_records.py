"""cdss.records makes the record classes dataclasses would make (issue 15: without their start-up cost).

Every behaviour the code relies on is compared with the real `dataclasses.dataclass` on the
same class bodies: construction (positional, keyword, defaults, factories, wrong calls),
repr, equality, hashing, frozenness, pattern matching, copy and pickle; and every record class
cdss defines has the `__init__` signature its dataclass would have.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from typing import Any

import pytest

from cdss import errors, evidence, fields, loader, model, records


def pair(frozen: bool) -> tuple[type, type]:
    """The same class body made by records and by dataclasses."""
    made = []
    for decorate, make_field in ((records.dataclass, records.field), (dataclasses.dataclass, dataclasses.field)):
        namespace: dict[str, Any] = {
            "__annotations__": {"name": "str", "line": "int | None", "tags": "tuple[str, ...]", "note": "str",
                                "items": "list[int]"},
            "tags": (), "note": "", "items": make_field(default_factory=list),
            "__doc__": "A record.", "__module__": __name__, "__qualname__": "Sample",
            "shout": lambda self: self.name.upper(),
        }
        made.append(decorate(frozen=frozen)(type("Sample", (), namespace)))
    return made[0], made[1]


CALLS: list[tuple[tuple[Any, ...], dict[str, Any]]] = [
    (("a", 1), {}), (("a", None, ("x",)), {}), (("a", 1, ("x", "y"), "n", [1, 2]), {}),
    ((), {"name": "a", "line": 2, "note": "k"}), (("a",), {"line": 3, "items": [4]}),
    ((), {}), (("a",), {}), (("a", 1, (), "", [], "extra"), {}), (("a", 1), {"name": "b"}), (("a", 1), {"unknown": 1}),
]


@pytest.mark.parametrize("frozen", [True, False])
@pytest.mark.parametrize("call", CALLS)
def test_records_behave_as_dataclasses(frozen: bool, call: tuple[tuple[Any, ...], dict[str, Any]]) -> None:
    ours, theirs = pair(frozen)
    args, kwargs = call
    try:
        expected = theirs(*args, **kwargs)
    except TypeError as error:
        with pytest.raises(TypeError) as raised:
            ours(*args, **kwargs)
        assert str(raised.value).split(" ", 1)[1] == str(error).split(" ", 1)[1]  # same message but the qualname
        return
    got = ours(*args, **kwargs)
    assert repr(got) == repr(expected)
    assert [getattr(got, f) for f in ("name", "line", "tags", "note", "items")] == \
           [getattr(expected, f) for f in ("name", "line", "tags", "note", "items")]
    assert got.shout() == expected.shout()
    assert got == ours(*args, **kwargs) and not got != ours(*args, **kwargs)
    assert got != expected and got != (got.name, got.line)  # another class, even with the same fields, is not equal
    other = ours("zz", 99)
    assert (got == other) == (expected == theirs("zz", 99))
    assert ours.__match_args__ == theirs.__match_args__
    assert ours.__doc__ == theirs.__doc__ == "A record."
    if len(args) < 5 and "items" not in kwargs:
        assert ours(*args, **kwargs).items is not got.items  # a factory default is per instance
    if frozen:
        for mine, reference in (((lambda: setattr(got, "name", "b")), (lambda: setattr(expected, "name", "b"))),
                                ((lambda: setattr(got, "new", 1)), (lambda: setattr(expected, "new", 1))),
                                ((lambda: delattr(got, "line")), (lambda: delattr(expected, "line")))):
            with pytest.raises(records.FrozenInstanceError) as a:
                mine()
            with pytest.raises(dataclasses.FrozenInstanceError) as b:
                reference()
            assert str(a.value) == str(b.value) and isinstance(a.value, AttributeError)
        twin = pair(frozen)[0](*args, **kwargs)
        with pytest.raises(TypeError):  # a list field: unhashable, as for the dataclass
            hash(expected)
        with pytest.raises(TypeError):
            hash(got)
        hashable, hashable_twin = ours(got.name, got.line, got.tags, got.note, ()), ours(got.name, got.line, got.tags, got.note, ())
        assert hash(hashable) == hash(hashable_twin) == hash((got.name, got.line, got.tags, got.note, ()))
        assert hash(theirs(got.name, got.line, got.tags, got.note, ())) == hash(hashable)
        del twin
        assert ours.__hash__ is not None and theirs.__hash__ is not None
    else:
        assert ours.__hash__ is None and theirs.__hash__ is None
        got.name = "changed"
        assert got.name == "changed"
    match got:
        case ours(name, line):  # type: ignore[misc]
            assert (name, line) == (got.name, got.line)
        case _:
            pytest.fail("a record matches its positional pattern")


def test_records_copy_and_pickle_as_dataclasses() -> None:
    problem = errors.Problem("rules/x.yaml", 3, 4, "R-1", "bad", "warning")
    assert pickle.loads(pickle.dumps(problem)) == problem
    assert copy.deepcopy(problem) == problem and copy.copy(problem) == problem
    assert hash(copy.deepcopy(problem)) == hash(problem)
    loaded = loader.load()  # the bundled rule set: nested records, dicts, tuples
    assert pickle.loads(pickle.dumps(loaded)) == loaded
    assert copy.deepcopy(loaded) == loaded


def test_records_refuse_what_they_do_not_make() -> None:
    with pytest.raises(TypeError, match="follows default"):
        records.dataclass(type("A", (), {"__annotations__": {"a": "int", "b": "int"}, "a": 1}))
    with pytest.raises(ValueError, match="mutable default"):
        records.dataclass(type("A", (), {"__annotations__": {"a": "list[int]"}, "a": []}))
    with pytest.raises(TypeError, match="ClassVar"):
        records.dataclass(type("A", (), {"__annotations__": {"a": "ClassVar[int]"}}))
    with pytest.raises(TypeError, match="defines __eq__"):
        records.dataclass(type("A", (), {"__annotations__": {"a": "int"}, "__eq__": lambda s, o: True}))
    base = records.dataclass(type("B", (), {"__annotations__": {"a": "int"}}))
    with pytest.raises(TypeError, match="inherit"):
        records.dataclass(type("C", (base,), {"__annotations__": {"b": "int"}}))


RECORD_CLASSES = [errors.Problem, evidence.SourceDocument, fields.Field, loader.LoadedRules, loader._Collector,
                  *(value for value in vars(model).values() if isinstance(value, type) and value.__module__ == model.__name__
                    and "__match_args__" in vars(value))]


@pytest.mark.parametrize("cls", RECORD_CLASSES, ids=lambda c: c.__qualname__)
def test_every_record_class_has_its_dataclass_signature(cls: type) -> None:
    namespace = {name: value for name, value in vars(cls).items() if name in cls.__annotations__}
    frozen = cls.__hash__ is not None
    for name in cls.__annotations__:
        if name not in namespace and name in ("problems",):
            namespace[name] = dataclasses.field(default_factory=list)
    twin = dataclasses.dataclass(frozen=frozen)(type(cls.__name__, (), {"__annotations__": dict(cls.__annotations__),
                                                                        "__module__": cls.__module__, **namespace}))
    assert [(p.name, p.kind) for p in inspect.signature(cls.__init__).parameters.values()] == \
           [(p.name, p.kind) for p in inspect.signature(twin.__init__).parameters.values()]
    assert [p.default for p in inspect.signature(cls.__init__).parameters.values() if p.default is not records._MISSING] == \
           [p.default for p in inspect.signature(twin.__init__).parameters.values()
            if p.default is not dataclasses._HAS_DEFAULT_FACTORY]  # type: ignore[attr-defined]
    assert (cls.__hash__ is None) == (twin.__hash__ is None)
    assert len(RECORD_CLASSES) >= 15
