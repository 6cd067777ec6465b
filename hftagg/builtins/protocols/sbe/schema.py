"""SBE 1.0 message schemas (FIX Trading Community XML) parsed into a small typed model.

``parse_schema(path)`` reads an XML message schema and resolves every type reference, offset and
block length, so the codec builder never looks at XML again:

- primitive types with ``length`` (arrays, char strings), ``presence`` (required / optional /
  constant) and ``nullValue`` (the SBE default null of the primitive when not given);
- enums and sets, whose ``encodingType`` may name a primitive or another simple type;
- composites (nested, with ``ref`` members and explicit member ``offset``);
- messages and repeating groups (``blockLength`` and field ``offset`` respected or computed),
  variable-length data, ``sinceVersion`` on every element, constant fields with ``valueRef``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hftagg.errors import SchemaError

__all__ = [
    "PRIMITIVES",
    "Composite",
    "Data",
    "EnumType",
    "Field",
    "Group",
    "Member",
    "Message",
    "MessageSchema",
    "Primitive",
    "SetType",
    "parse_schema",
]

#: primitive name -> (numpy type code, size, default null value)
PRIMITIVES: dict[str, tuple[str, int, object]] = {
    "char": ("S1", 1, 0),
    "int8": ("i1", 1, -(2**7)),
    "uint8": ("u1", 1, 2**8 - 1),
    "int16": ("i2", 2, -(2**15)),
    "uint16": ("u2", 2, 2**16 - 1),
    "int32": ("i4", 4, -(2**31)),
    "uint32": ("u4", 4, 2**32 - 1),
    "int64": ("i8", 8, -(2**63)),
    "uint64": ("u8", 8, 2**64 - 1),
    "float": ("f4", 4, math.nan),
    "double": ("f8", 8, math.nan),
}


@dataclass
class Primitive:
    """A simple type: one primitive, ``length`` of them (0: the varData of a data composite)."""

    name: str
    primitive: str
    length: int = 1
    presence: str = "required"
    null_value: object = None
    constant: object = None  # value when presence == "constant"
    character_encoding: str | None = None
    since_version: int = 0

    @property
    def size(self) -> int:
        return 0 if self.presence == "constant" else PRIMITIVES[self.primitive][1] * self.length

    @property
    def null(self) -> object:
        """The value that means "absent": ``nullValue`` or the primitive's SBE default."""
        return PRIMITIVES[self.primitive][2] if self.null_value is None else self.null_value


@dataclass
class EnumType:
    name: str
    encoding: Primitive
    values: dict[str, int]
    since_version: int = 0

    @property
    def size(self) -> int:
        return self.encoding.size

    @property
    def null(self) -> object:
        return self.encoding.null


@dataclass
class SetType:
    name: str
    encoding: Primitive
    choices: dict[str, int]  # name -> bit position
    since_version: int = 0

    @property
    def size(self) -> int:
        return self.encoding.size

    null = 0


@dataclass
class Member:
    name: str
    type: Primitive | EnumType | SetType | Composite
    offset: int


@dataclass
class Composite:
    name: str
    members: list[Member]
    size: int
    since_version: int = 0

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise SchemaError(f"composite {self.name!r} has no member {name!r}")


Encoding = Primitive | EnumType | SetType | Composite


@dataclass
class Field:
    name: str
    id: int
    type: Encoding
    offset: int
    presence: str = "required"
    since_version: int = 0
    constant: object = None  # a constant field's value (valueRef resolved)

    @property
    def is_constant(self) -> bool:
        return self.presence == "constant" or (
            isinstance(self.type, Primitive) and self.type.presence == "constant"
        )


@dataclass
class Data:
    name: str
    id: int
    type: Composite  # length member + varData member
    since_version: int = 0

    @property
    def length_type(self) -> Primitive:
        return self.type.members[0].type  # type: ignore[return-value]

    @property
    def prefix_size(self) -> int:
        return self.type.members[1].offset


@dataclass
class Group:
    name: str
    id: int
    dimension: Composite
    block_length: int
    fields: list[Field] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    datas: list[Data] = field(default_factory=list)
    since_version: int = 0


@dataclass
class Message:
    name: str
    id: int
    block_length: int
    fields: list[Field] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    datas: list[Data] = field(default_factory=list)
    since_version: int = 0
    description: str = ""

    @property
    def fixed(self) -> bool:
        """No repeating groups or var data: every message has the same size for a version."""
        return not self.groups and not self.datas


@dataclass
class MessageSchema:
    package: str
    id: int
    version: int
    byte_order: str  # "littleEndian" | "bigEndian"
    header: Composite
    types: dict[str, Encoding]
    messages: dict[int, Message]
    path: str = ""

    @property
    def endian(self) -> str:
        return ">" if self.byte_order == "bigEndian" else "<"

    def message(self, key: int | str) -> Message:
        if isinstance(key, int):
            if key in self.messages:
                return self.messages[key]
        else:
            for m in self.messages.values():
                if m.name == key:
                    return m
        known = ", ".join(f"{m.name}({i})" for i, m in sorted(self.messages.items()))
        raise SchemaError(
            f"SBE schema {self.path or self.package!r} has no message {key!r}; messages: {known}"
        )


# --------------------------------------------------------------------------- parsing


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _int(value: str | None, default: int = 0) -> int:
    return default if value is None or value == "" else int(value)


def _number(primitive: str, text: str) -> object:
    text = text.strip()
    if primitive == "char":
        return text
    if primitive in ("float", "double"):
        return float(text)
    return int(text)


class _Parser:
    def __init__(self, root: ET.Element, path: str) -> None:
        self.path = path
        self.elements: dict[str, ET.Element] = {}
        self.types: dict[str, Encoding] = {}
        self._resolving: set[str] = set()
        for types in root:
            if _local(types.tag) == "types":
                for el in types:
                    self.elements[el.get("name", "")] = el

    def error(self, what: str) -> SchemaError:
        return SchemaError(f"SBE schema {self.path}: {what}")

    def resolve(self, name: str) -> Encoding:
        if name in PRIMITIVES:
            return Primitive(name, name)
        if name in self.types:
            return self.types[name]
        if name not in self.elements:
            raise self.error(f"unknown type {name!r}")
        if name in self._resolving:
            raise self.error(f"type {name!r} refers to itself")
        self._resolving.add(name)
        enc = self.build(self.elements[name])
        self._resolving.discard(name)
        self.types[name] = enc
        return enc

    def build(self, el: ET.Element) -> Encoding:
        kind = _local(el.tag)
        name = el.get("name", "")
        since = _int(el.get("sinceVersion"))
        if kind == "type":
            prim = el.get("primitiveType", "")
            if prim not in PRIMITIVES:
                raise self.error(f"type {name!r}: unknown primitiveType {prim!r}")
            t = Primitive(
                name,
                prim,
                _int(el.get("length"), 1),
                el.get("presence", "required"),
                None,
                None,
                el.get("characterEncoding"),
                since,
            )
            if el.get("nullValue") is not None:
                t.null_value = _number(prim, el.get("nullValue", ""))
            if t.presence == "constant":
                t.constant = _number(prim, el.text or "")
            return t
        if kind in ("enum", "set"):
            return self._enum_or_set(el, kind, name, since)
        if kind == "composite":
            members, offset = [], 0
            for m in el:
                mk = _local(m.tag)
                if mk == "ref":
                    t = self.resolve(m.get("type", ""))
                else:
                    t = self.build(m)
                if m.get("offset") is not None:
                    offset = int(m.get("offset", "0"))
                members.append(Member(m.get("name", ""), t, offset))
                offset += t.size
            return Composite(name, members, offset, since)
        raise self.error(f"unknown type element <{kind}> for {name!r}")

    def _enum_or_set(self, el: ET.Element, kind: str, name: str, since: int) -> Encoding:
        base = self.resolve(el.get("encodingType", ""))
        if not isinstance(base, Primitive):
            raise self.error(f"{kind} {name!r}: encodingType must be a primitive type")
        values = {}
        for v in el:
            text = (v.text or "").strip()
            if kind == "enum" and base.primitive == "char":
                values[v.get("name", "")] = ord(text)
            else:
                values[v.get("name", "")] = int(text)
        if kind == "enum":
            return EnumType(name, base, values, since)
        return SetType(name, base, values, since)

    def fields(self, el: ET.Element, messages_constants: dict) -> tuple[list, list, list, int]:
        fields, groups, datas = [], [], []
        offset = 0
        for child in el:
            kind = _local(child.tag)
            name = child.get("name", "")
            since = _int(child.get("sinceVersion"))
            if kind == "field":
                t = self.resolve(child.get("type", ""))
                if child.get("offset") is not None:
                    offset = int(child.get("offset", "0"))
                presence = child.get("presence", "required")
                f = Field(name, _int(child.get("id")), t, offset, presence, since)
                if presence == "constant":
                    f.constant = self.constant_ref(child, t)
                elif isinstance(t, Primitive) and t.presence == "constant":
                    f.constant = t.constant
                if not f.is_constant:
                    offset += t.size
                fields.append(f)
            elif kind == "group":
                dim = self.resolve(child.get("dimensionType", "groupSizeEncoding"))
                if not isinstance(dim, Composite):
                    raise self.error(f"group {name!r}: dimensionType must be a composite")
                gf, gg, gd, gsize = self.fields(child, messages_constants)
                bl = _int(child.get("blockLength"), gsize)
                groups.append(Group(name, _int(child.get("id")), dim, bl, gf, gg, gd, since))
            elif kind == "data":
                t = self.resolve(child.get("type", ""))
                if not isinstance(t, Composite) or len(t.members) != 2:
                    raise self.error(f"data {name!r}: type must be a length + varData composite")
                datas.append(Data(name, _int(child.get("id")), t, since))
        size = max((f.offset + f.type.size for f in fields if not f.is_constant), default=0)
        return fields, groups, datas, size

    def constant_ref(self, el: ET.Element, t: Encoding) -> object:
        ref = el.get("valueRef")
        if ref:
            enum_name, _, value = ref.partition(".")
            enum = self.resolve(enum_name)
            if not isinstance(enum, EnumType) or value not in enum.values:
                raise self.error(f"field {el.get('name')!r}: bad valueRef {ref!r}")
            return enum.values[value]
        if isinstance(t, Primitive):
            return t.constant if t.constant is not None else _number(t.primitive, el.text or "")
        return (el.text or "").strip()


def parse_schema(source: str | Path) -> MessageSchema:
    """Parse an SBE XML message schema file (or XML text starting with ``<``)."""
    text = str(source)
    try:
        if text.lstrip().startswith("<"):
            root, path = ET.fromstring(text), "(xml text)"
        else:
            root, path = ET.parse(text).getroot(), text
    except (OSError, ET.ParseError) as exc:
        raise SchemaError(f"cannot read SBE schema {text[:200]!r}: {exc}") from exc
    if _local(root.tag) != "messageSchema":
        raise SchemaError(
            f"SBE schema {path}: root element is <{_local(root.tag)}>, expected <messageSchema>"
        )
    p = _Parser(root, path)
    header_name = root.get("headerType", "messageHeader")
    header = p.resolve(header_name)
    if not isinstance(header, Composite):
        raise p.error(f"header type {header_name!r} must be a composite")
    for need in ("blockLength", "templateId", "schemaId", "version"):
        header.member(need)
    for name in list(p.elements):
        p.resolve(name)
    messages: dict[int, Message] = {}
    for el in root:
        if _local(el.tag) != "message":
            continue
        fields, groups, datas, size = p.fields(el, {})
        mid = _int(el.get("id"))
        if mid in messages:
            raise p.error(f"message id {mid} is used twice")
        bl = _int(el.get("blockLength"), size)
        if bl < size:
            raise p.error(f"message {el.get('name')!r}: blockLength {bl} < its fields' {size}")
        messages[mid] = Message(
            el.get("name", ""),
            mid,
            bl,
            fields,
            groups,
            datas,
            _int(el.get("sinceVersion")),
            el.get("description", ""),
        )
    byte_order = root.get("byteOrder", "littleEndian")
    if byte_order not in ("littleEndian", "bigEndian"):
        raise p.error(f"byteOrder {byte_order!r}: expected littleEndian or bigEndian")
    return MessageSchema(
        root.get("package", ""),
        _int(root.get("id")),
        _int(root.get("version")),
        byte_order,
        header,
        p.types,
        messages,
        path,
    )


# --------------------------------------------------------------------------- numpy layouts


def type_dtype(t: Encoding, endian: str) -> np.dtype | None:
    """The numpy dtype of one encoded value (``None`` for a constant)."""
    if isinstance(t, Primitive):
        if t.presence == "constant":
            return None
        code = PRIMITIVES[t.primitive][0]
        if t.primitive == "char":
            return np.dtype(f"S{t.length}")
        base = np.dtype(endian + code)
        return base if t.length == 1 else np.dtype((base, (t.length,)))
    if isinstance(t, (EnumType, SetType)):
        code = PRIMITIVES[t.encoding.primitive][0]
        return np.dtype("u1") if code == "S1" else np.dtype(endian + code)
    names, formats, offsets = [], [], []
    for m in t.members:
        dt = type_dtype(m.type, endian)
        if dt is not None and m.type.size:
            names.append(m.name)
            formats.append(dt)
            offsets.append(m.offset)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": t.size})


def block_dtype(fields: list[Field], block_length: int, endian: str) -> np.dtype:
    """A structured dtype of ``block_length`` bytes with each non-constant field at its offset."""
    names, formats, offsets = [], [], []
    for f in fields:
        if f.is_constant:
            continue
        names.append(f.name)
        formats.append(type_dtype(f.type, endian))
        offsets.append(f.offset)
    return np.dtype(
        {"names": names, "formats": formats, "offsets": offsets, "itemsize": block_length}
    )


def _fill_null(arr: np.ndarray, t: Encoding) -> None:
    if isinstance(t, Composite):
        for m in t.members:
            if m.type.size and arr.dtype.names and m.name in arr.dtype.names:
                _fill_null(arr[m.name], m.type)
        return
    null = t.null
    if isinstance(t, Primitive) and t.primitive == "char":
        arr[...] = b"" if null == 0 else bytes([int(null)]) if isinstance(null, int) else null
    else:
        arr[...] = null


def null_row(fields: list[Field], dtype: np.dtype) -> np.ndarray:
    """One record of ``dtype`` with every field at its null value (what a missing field reads)."""
    row = np.zeros(1, dtype=dtype)
    for f in fields:
        if not f.is_constant:
            _fill_null(row[f.name], f.type)
    return row


def min_block_length(fields: list[Field], version: int) -> int:
    """The smallest block that holds every field a sender of ``version`` must send."""
    return max(
        (
            f.offset + f.type.size
            for f in fields
            if not f.is_constant and f.since_version <= version
        ),
        default=0,
    )
