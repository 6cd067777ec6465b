"""FIX data dictionaries are data: QuickFIX-format XML files in the repository's ``protocols/fix/``.

:func:`load_dictionary` parses a QuickFIX data dictionary (``<fix>`` with ``<header>``,
``<trailer>``, ``<messages>``, ``<components>`` and ``<fields>``) into a :class:`Dictionary`:
fields by number and name (type, enum values), the header and trailer, and every message with its
fields, required fields and repeating groups (count tag, delimiter = the group's first field,
member fields, nested groups), components flattened in. As in QuickFIX, a field inside an optional
component is not required, whatever its own ``required`` says.

A relative path (``"fix/FIX44.xml"``) resolves against ``protocols/`` (:func:`resolve`), so a
venue dictionary dropped there is usable from config with no code. Loaded dictionaries are cached
by path and modification time. The dictionary shipped is QuickFIX's FIX 4.4 one (see
``protocols/fix/NOTICE``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from hftagg.builtins.protocols import find_definition
from hftagg.errors import SchemaError

__all__ = [
    "DEFAULT_DICTIONARY",
    "Dictionary",
    "FieldDef",
    "GroupDef",
    "MessageDef",
    "load_dictionary",
    "resolve",
]

DEFAULT_DICTIONARY = "fix/FIX44.xml"


@dataclass(frozen=True)
class FieldDef:
    """One field: tag number, name, QuickFIX type (``PRICE``, ``CHAR``...), enum values."""

    number: int
    name: str
    type: str
    values: dict[str, str] = field(default_factory=dict)  # enum value -> description


@dataclass(frozen=True)
class GroupDef:
    """A repeating group: its count tag (``NoMDEntries``), delimiter (first field of an entry),
    the tags an entry may hold (nested groups' count tags included, their members not), the tags
    an entry must hold, and the nested groups by count tag."""

    count_tag: int
    delimiter: int
    members: frozenset[int]
    required: frozenset[int]
    groups: dict[int, GroupDef]


@dataclass(frozen=True)
class MessageDef:
    """A message (or the header/trailer): top-level tags, required tags, groups by count tag."""

    msg_type: str
    name: str
    category: str  # "admin" or "app"
    fields: frozenset[int]
    required: frozenset[int]
    groups: dict[int, GroupDef]


@dataclass(frozen=True)
class Dictionary:
    """A parsed data dictionary (see the module docstring)."""

    path: Path
    begin_string: str
    fields: dict[int, FieldDef]
    header: MessageDef
    trailer: MessageDef
    messages: dict[str, MessageDef]
    names: dict[str, int]  # field name -> number

    def tag(self, name: str, default: int | None = None) -> int:
        """The number of the field called ``name``; ``default`` if not defined (or raise)."""
        number = self.names.get(name)
        if number is not None:
            return number
        if default is not None:
            return default
        raise SchemaError(f"FIX dictionary {self.path}: no field named {name!r}; add "
                          f"<field number='...' name='{name}' .../> to its <fields>")  # fmt: skip

    def values(self, name: str) -> dict[str, str]:
        """Enum values (value -> description) of the field called ``name``; empty if none."""
        number = self.names.get(name)
        return dict(self.fields[number].values) if number is not None else {}

    def group(self, msg_type: str, count_tag: int) -> GroupDef | None:
        message = self.messages.get(msg_type)
        return None if message is None else message.groups.get(count_tag)


_CACHE: dict[tuple[Path, int], Dictionary] = {}


def resolve(path: str | Path) -> Path:
    """The dictionary file ``path`` names (see :func:`hftagg.builtins.protocols.find_definition`)."""
    return find_definition(path, "FIX dictionary")


def load_dictionary(path: str | Path = DEFAULT_DICTIONARY) -> Dictionary:
    """Parse (or take from the cache) the QuickFIX XML data dictionary at ``path``.

    Raises :class:`~hftagg.errors.SchemaError` naming the file when it is missing or malformed.
    """
    resolved = resolve(path)
    try:
        key = (resolved, resolved.stat().st_mtime_ns)
    except OSError as exc:
        raise SchemaError(f"FIX dictionary {str(path)!r}: {resolved} cannot be read ({exc}); "
                          f"put a QuickFIX data dictionary there") from exc  # fmt: skip
    cached = _CACHE.get(key)
    if cached is None:
        try:
            root = ET.parse(resolved).getroot()
            cached = _Parser(resolved, root).parse()
        except (ET.ParseError, KeyError, ValueError) as exc:
            raise SchemaError(f"FIX dictionary {resolved}: not a valid QuickFIX data dictionary "
                              f"({type(exc).__name__}: {exc})") from exc  # fmt: skip
        _CACHE[key] = cached
    return cached


class _Parser:
    def __init__(self, path: Path, root: ET.Element) -> None:
        if root.tag != "fix":
            raise ValueError(f"root element is <{root.tag}>, expected <fix>")
        self.path = path
        self.root = root
        self.fields: dict[int, FieldDef] = {}
        self.names: dict[str, int] = {}
        for el in root.iterfind("fields/field"):
            number = int(el.attrib["number"])
            values = {v.attrib["enum"]: v.get("description", "") for v in el.iterfind("value")}
            self.fields[number] = FieldDef(number, el.attrib["name"], el.attrib["type"], values)
            self.names[el.attrib["name"]] = number
        self.components = {el.attrib["name"]: el for el in root.iterfind("components/component")}

    def parse(self) -> Dictionary:
        r = self.root
        kind = r.get("type", "FIX")
        begin = f"{kind}.{r.get('major', '4')}.{r.get('minor', '4')}"
        if r.get("servicepack", "0") not in ("", "0"):
            begin += f"SP{r.get('servicepack')}"
        header = self._message("", "Header", "admin", r.find("header"))
        trailer = self._message("", "Trailer", "admin", r.find("trailer"))
        messages = {}
        for el in r.iterfind("messages/message"):
            msg_type = el.attrib["msgtype"]
            messages[msg_type] = self._message(msg_type, el.attrib["name"],
                                               el.get("msgcat", "app"), el)  # fmt: skip
        return Dictionary(self.path, begin, self.fields, header, trailer, messages, self.names)

    def _message(self, msg_type: str, name: str, category: str, el) -> MessageDef:
        tags: list[int] = []
        required: set[int] = set()
        groups: dict[int, GroupDef] = {}
        if el is not None:
            self._members(el, True, tags, required, groups, set())
        return MessageDef(msg_type, name, category, frozenset(tags), frozenset(required), groups)

    def _number(self, name: str) -> int:
        number = self.names.get(name)
        if number is None:
            raise KeyError(f"field {name!r} is used but not defined in <fields>")
        return number

    def _members(self, el, required_here: bool, tags: list[int], required: set[int],
                 groups: dict[int, GroupDef], seen: set[str]) -> None:  # fmt: skip
        """Collect the fields of ``el``'s children (components flattened) into the outputs."""
        for child in el:
            is_required = required_here and child.get("required", "N") == "Y"
            if child.tag == "field":
                number = self._number(child.attrib["name"])
                tags.append(number)
                if is_required:
                    required.add(number)
            elif child.tag == "group":
                number = self._number(child.attrib["name"])
                tags.append(number)
                if is_required:
                    required.add(number)
                groups[number] = self._group(number, child, seen)
            elif child.tag == "component":
                comp_name = child.attrib["name"]
                if comp_name in seen:
                    raise ValueError(f"component {comp_name!r} includes itself")
                component = self.components.get(comp_name)
                if component is None:
                    raise KeyError(f"component {comp_name!r} is used but not defined")
                self._members(component, is_required, tags, required, groups, seen | {comp_name})

    def _group(self, count_tag: int, el, seen: set[str]) -> GroupDef:
        tags: list[int] = []
        required: set[int] = set()
        groups: dict[int, GroupDef] = {}
        self._members(el, True, tags, required, groups, seen)
        if not tags:
            raise ValueError(f"group {self.fields[count_tag].name} has no fields")
        delimiter = tags[0]
        required.add(delimiter)
        return GroupDef(count_tag, delimiter, frozenset(tags), frozenset(required), groups)
