"""A faster `__init__` for the frozen, slotted dataclasses a gathering builds by the score.

A frozen dataclass's own `__init__` sets each field through `object.__setattr__`, which
costs as much again as building the instance: 0.47 µs for the six fields an
`IceCandidate` had then, 0.27 µs when each slot is set through its descriptor instead. A host+srflx
gathering builds about twenty such records (candidates, events, commands, bases), so those
classes take this `__init__`. Nothing else changes: instances stay frozen, and compare,
hash and print as before.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["fast_init"]

T = TypeVar("T")


def fast_init(cls: type[T]) -> type[T]:
    """Decorate a `@dataclass(frozen=True, slots=True)` (put it above that decorator)."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} is not a frozen, slotted dataclass")
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    namespace: dict[str, Any] = {}
    arguments, body = [], []
    for index, item in enumerate(fields):
        if not item.init or item.kw_only or item.default_factory is not dataclasses.MISSING:
            raise TypeError(f"{cls.__name__}.{item.name}: only plain positional fields")
        namespace[f"_set{index}"] = getattr(cls, item.name).__set__
        if item.default is dataclasses.MISSING:
            arguments.append(item.name)
        else:
            namespace[f"_default{index}"] = item.default
            arguments.append(f"{item.name}=_default{index}")
        body.append(f"    _set{index}(self, {item.name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(arguments)}):\n" + "\n".join(body or ["    pass"])
    exec(source, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__doc__ = cls.__init__.__doc__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
