"""A product's return exception (`a4co.type.v1.ReturnException`, decision 53) as the services
store it: its name without the prefix ("PERISHABLE", "PERSONALISED"), empty for none. A value
this code does not know yet (from a newer producer) is kept as its number, and still counts as
an exception: a product is returnable only when nothing says otherwise."""

from __future__ import annotations

from typing import TypeAlias

from a4co.type.v1 import return_exception_pb2 as pb

Value: TypeAlias = pb.ReturnException.ValueType
_PREFIX = "RETURN_EXCEPTION_"
_NAMES: dict[int, str] = {
    int(value): pb.ReturnException.Name(value).removeprefix(_PREFIX) for value in pb.ReturnException.values()
}
_NAMES[pb.RETURN_EXCEPTION_UNSPECIFIED] = ""
_VALUES = {name: Value(value) for value, name in _NAMES.items()}


def known(value: int) -> bool:
    """Whether `value` is one of the enum's."""
    return value in _NAMES


def name_of(value: int) -> str:
    """How a value is stored."""
    return _NAMES.get(value, str(value))


def value_of(name: str) -> Value:
    """The value stored as `name`."""
    if name in _VALUES:
        return _VALUES[name]
    return Value(int(name)) if name.isdigit() else pb.RETURN_EXCEPTION_UNSPECIFIED
