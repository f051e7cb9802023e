"""Hypothesis strategies for protobuf messages, built from their descriptors, and for raw request bytes.

Semantics: `messages(descriptor)` draws instances of the message class: every field independently set
or left unset, at most one member of each oneof, scalars from their whole range with the edges weighted
in (0, -1, the type's min and max, NaN and the infinities for floats), strings of any unicode without
surrogates (a protobuf string cannot hold one) or one of `names` (so that some requests name things that
exist and get past the lookup), open enums with unknown numbers too, repeated and map fields of up to
`max_items` entries, and nested messages down to `max_depth`. `raw_requests(descriptor)` draws bytes for
a generic call with identity serializers: random bytes, or a drawn message's encoding with bytes
flipped, cut or appended, so that the server's parser sees what no stub would send.
"""

from __future__ import annotations

import math

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

F = FieldDescriptor
_INT_RANGES = {
    F.TYPE_INT32: (-(2**31), 2**31 - 1),
    F.TYPE_SINT32: (-(2**31), 2**31 - 1),
    F.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    F.TYPE_INT64: (-(2**63), 2**63 - 1),
    F.TYPE_SINT64: (-(2**63), 2**63 - 1),
    F.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    F.TYPE_UINT32: (0, 2**32 - 1),
    F.TYPE_FIXED32: (0, 2**32 - 1),
    F.TYPE_UINT64: (0, 2**64 - 1),
    F.TYPE_FIXED64: (0, 2**64 - 1),
}
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted({v for v in (0, 1, -1, 2, low, high, low + 1, high - 1) if low <= v <= high})
    return st.one_of(st.sampled_from(edges), st.integers(0, min(high, 300)), st.integers(low, high))


def _floats(width: int) -> st.SearchStrategy[float]:
    edges = [0.0, -0.0, 1.0, -1.0, 0.5, 2.0, math.nan, math.inf, -math.inf]
    return st.one_of(st.sampled_from(edges), st.floats(width=width), st.floats(-3.0, 3.0, width=width))


def _scalar(field: FieldDescriptor, names: tuple[str, ...]) -> st.SearchStrategy:
    if field.type in _INT_RANGES:
        return _integers(*_INT_RANGES[field.type])
    if field.type == F.TYPE_BOOL:
        return st.booleans()
    if field.type in (F.TYPE_FLOAT, F.TYPE_DOUBLE):
        return _floats(32 if field.type == F.TYPE_FLOAT else 64)
    if field.type == F.TYPE_STRING:
        return st.one_of(_TEXT, st.sampled_from(names)) if names else _TEXT
    if field.type == F.TYPE_BYTES:
        return st.binary(max_size=64)
    if field.type == F.TYPE_ENUM:
        numbers = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), _integers(-(2**31), 2**31 - 1))
    raise TypeError(f"no strategy for field {field.full_name} of type {field.type}")


class _Builder:
    def __init__(self, names: tuple[str, ...], max_depth: int, max_items: int) -> None:
        self.names, self.max_depth, self.max_items = names, max_depth, max_items

    def value(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy:
        if field.type == F.TYPE_MESSAGE:
            return self.message(field.message_type, depth + 1)
        return _scalar(field, self.names)

    def field(self, field: FieldDescriptor, depth: int) -> st.SearchStrategy:
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key, value = field.message_type.fields_by_name["key"], field.message_type.fields_by_name["value"]
            items = st.tuples(self.value(key, depth), self.value(value, depth))
            return st.lists(items, max_size=self.max_items)
        if field.is_repeated:
            return st.lists(self.value(field, depth), max_size=self.max_items)
        return self.value(field, depth)

    def message(self, descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[Message]:
        cls = message_factory.GetMessageClass(descriptor)
        if depth > self.max_depth:
            return st.builds(cls)
        plain = [f for f in descriptor.fields if f.containing_oneof is None]
        parts = {f.name: st.none() | self.field(f, depth) for f in plain}
        for oneof in descriptor.oneofs:
            choices = [st.tuples(st.just(f.name), self.field(f, depth)) for f in oneof.fields]
            parts[f"oneof:{oneof.name}"] = st.none() | st.one_of(choices)
        return st.fixed_dictionaries(parts).map(lambda drawn: _assemble(cls, descriptor, drawn))


def _assemble(cls: type[Message], descriptor: Descriptor, drawn: dict) -> Message:
    message = cls()
    for key, value in drawn.items():
        if value is None:
            continue
        name, value = value if key.startswith("oneof:") else (key, value)
        _set(message, descriptor.fields_by_name[name], value)
    return message


def _set(message: Message, field: FieldDescriptor, value) -> None:
    target = getattr(message, field.name)
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        for key, item in value:
            if isinstance(item, Message):
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif field.is_repeated:
        target.extend(value)
    elif field.type == F.TYPE_MESSAGE:
        target.CopyFrom(value)
    else:
        setattr(message, field.name, value)


def messages(
    descriptor: Descriptor, names: tuple[str, ...] = (), max_depth: int = 3, max_items: int = 4
) -> st.SearchStrategy[Message]:
    """Instances of the message `descriptor` describes (see the module docstring)."""
    return _Builder(tuple(names), max_depth, max_items).message(descriptor)


@st.composite
def _mutated(draw, descriptor: Descriptor, names: tuple[str, ...]) -> bytes:
    data = bytearray(draw(messages(descriptor, names)).SerializeToString())
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(("flip", "cut", "append")))
        if action == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif action == "cut" and data:
            del data[draw(st.integers(0, len(data) - 1)) :]
        else:
            data += draw(st.binary(min_size=1, max_size=8))
    return bytes(data)


def raw_requests(descriptor: Descriptor, names: tuple[str, ...] = ()) -> st.SearchStrategy[bytes]:
    """Request bytes for a generic call: random, or a real encoding damaged (see the module docstring)."""
    return st.one_of(st.binary(max_size=128), _mutated(descriptor, names))
