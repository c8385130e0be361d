"""Record classes as `dataclasses.dataclass` makes them, at a fraction of the start-up cost.

`dataclasses` imports `inspect` and compiles each method of each class with its own `exec`:
the 19 record classes a cached one-patient `cdss evaluate` imports cost about a third of its
run (issue 15, cold start). `dataclass` here makes the same methods, with the same behaviour
(`__init__` with defaults and `field(default_factory=...)`, `__repr__`, `__eq__` between
instances of the same class, `__hash__` of the fields for frozen classes and none otherwise,
`FrozenInstanceError` on assignment, `__match_args__`), from one compiled source per class.
It covers only what cdss's records use and refuses the rest with a TypeError (a ClassVar or
InitVar annotation, a field-holding base class, a method it would have to replace), so a
record never silently behaves differently from its dataclass (tests/test_records.py compares
them); `dataclasses.fields`, `replace` and `asdict` do not apply.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["FrozenInstanceError", "dataclass", "field"]

_MISSING: Any = object()
_GENERATED = ("__init__", "__repr__", "__eq__", "__hash__", "__setattr__", "__delattr__")


class FrozenInstanceError(AttributeError):
    """A field of a frozen record was assigned or deleted (as `dataclasses.FrozenInstanceError`)."""


class _Factory:
    """`field(default_factory=...)`: each instance gets its own new default."""

    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[], Any]) -> None:
        self.factory = factory


def field(*, default_factory: Callable[[], Any]) -> Any:
    """A field whose default is made per instance (`dataclasses.field(default_factory=...)`)."""
    return _Factory(default_factory)


def dataclass(cls: type | None = None, /, *, frozen: bool = False) -> Any:
    """`@dataclass` / `@dataclass(frozen=True)`: the record methods for the annotated fields."""

    def wrap(target: type) -> type:
        return _record(target, frozen)

    return wrap if cls is None else wrap(cls)


def _record(cls: type, frozen: bool) -> type:
    body = cls.__dict__
    annotations = body.get("__annotations__", {})
    for base in cls.__mro__[1:-1]:
        if base.__dict__.get("__annotations__") or "__match_args__" in base.__dict__:
            raise TypeError(f"{cls.__qualname__}: records do not inherit fields (base {base.__qualname__})")
    for name in _GENERATED:
        if name in body:
            raise TypeError(f"{cls.__qualname__} defines {name}: a record generates it")
    names = tuple(annotations)
    namespace: dict[str, Any] = {"_MISSING": _MISSING, "_setattr": object.__setattr__}
    params, assign = [], []
    after_default = None
    for name in names:
        annotation = annotations[name]
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", repr(annotation))
        if text.split("[", 1)[0].rsplit(".", 1)[-1] in ("ClassVar", "InitVar"):
            raise TypeError(f"{cls.__qualname__}.{name}: ClassVar / InitVar fields are not supported by records")
        default = body.get(name, _MISSING)
        value = name
        if isinstance(default, _Factory):
            namespace[f"_factory_{name}"] = default.factory
            params.append(f"{name}=_MISSING")
            value = f"_factory_{name}() if {name} is _MISSING else {name}"
            delattr(cls, name)
        elif default is not _MISSING:
            if type(default).__hash__ is None:
                raise ValueError(f"mutable default {type(default)} for field {name} is not allowed: use default_factory")
            namespace[f"_default_{name}"] = default
            params.append(f"{name}=_default_{name}")
        else:
            if after_default is not None:
                raise TypeError(f"non-default argument {name!r} follows default argument")
            params.append(name)
        if default is not _MISSING:
            after_default = name
        assign.append(f"    _setattr(self, {name!r}, {value})" if frozen else f"    self.{name} = {value}")
    fields = "".join(f"self.{name}," for name in names)
    others = "".join(f"other.{name}," for name in names)
    shown = ", ".join(f"{name}={{self.{name}!r}}" for name in names)
    source = [
        f"def __init__(self, {', '.join(params)}) -> None:" if params else "def __init__(self) -> None:",
        *(assign or ["    pass"]),
        "def __repr__(self):",
        f"    return self.__class__.__qualname__ + f\"({shown})\"",
        "def __eq__(self, other):",
        "    if other.__class__ is self.__class__:",
        f"        return ({fields}) == ({others})",
        "    return NotImplemented",
        "def __hash__(self):",
        f"    return hash(({fields}))",
    ]
    exec(compile("\n".join(source), f"<record {cls.__qualname__}>", "exec"), namespace)  # noqa: S102 - made from field names only
    methods = {name: namespace[name] for name in ("__init__", "__repr__", "__eq__")}
    if frozen:
        methods["__hash__"] = namespace["__hash__"]
        methods["__setattr__"], methods["__delattr__"] = _frozen(cls, frozenset(names))
    else:
        methods["__hash__"] = None  # mutable and compared by value: unhashable, as a dataclass
    for name, method in methods.items():
        if method is not None:
            method.__qualname__ = f"{cls.__qualname__}.{name}"
        setattr(cls, name, method)
    cls.__match_args__ = names  # type: ignore[attr-defined]
    return cls


def _frozen(cls: type, names: frozenset[str]) -> tuple[Callable[..., None], Callable[..., None]]:
    def __setattr__(self: Any, name: str, value: Any) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot assign to field {name!r}")
        super(cls, self).__setattr__(name, value)

    def __delattr__(self: Any, name: str) -> None:
        if type(self) is cls or name in names:
            raise FrozenInstanceError(f"cannot delete field {name!r}")
        super(cls, self).__delattr__(name)

    return __setattr__, __delattr__
