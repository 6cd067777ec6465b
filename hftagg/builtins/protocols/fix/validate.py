"""Message validation against a data dictionary, as QuickFIX's ``DataDictionary::validate`` does.

With QuickFIX's defaults ``ValidateFieldsOutOfOrder=N`` (header fields may appear anywhere; body
fields in any order) and ``ValidateUserDefinedFields=N`` (tags >= 5000 are not checked against
the dictionary unless ``user_defined=True``). The checks, in QuickFIX's order, and the
SessionRejectReason (373) each one answers:

0. A tag repeated outside a repeating group's entries: 13 (Tag appears more than once).
1. MsgType not in the dictionary: 11 (Invalid MsgType).
2. A required field of the header, the message or a repeating-group entry missing: 1.
3. Then field by field in wire order: a field without a value: 4; a value not of the field's
   type (``INT``/``NUMINGROUP``/``SEQNUM``/``LENGTH``, ``FLOAT``/``PRICE``/``QTY``/``AMT``/...,
   ``CHAR``, ``BOOLEAN``, ``UTCTIMESTAMP``/``UTCTIMEONLY``/``UTCDATEONLY``): 6 (Incorrect data
   format); a value outside the field's enum: 5 (Value is incorrect); a tag the dictionary does
   not define: 0 (Invalid tag number); a defined tag that is not part of this message (or of
   the group entry it stands in): 2 (Tag not defined for this message type); a group count that
   differs from the entries present: 16 (Incorrect NumInGroup count).

Group entries start with the group's delimiter (its first field); the first tag that is not a
member of the group ends the group, as when QuickFIX parses a message with a dictionary.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from hftagg.builtins.protocols.fix.dictionary import Dictionary, GroupDef

__all__ = ["Problem", "validate"]

INVALID_TAG_NUMBER = 0
REQUIRED_TAG_MISSING = 1
TAG_NOT_DEFINED_FOR_MESSAGE = 2
TAG_WITHOUT_VALUE = 4
VALUE_INCORRECT = 5
INCORRECT_DATA_FORMAT = 6
INVALID_MSG_TYPE = 11
REPEATED_TAG = 13
INCORRECT_NUM_IN_GROUP = 16
USER_MIN = 5000

_INT = re.compile(rb"-?\d+\Z")
_FLOAT = re.compile(rb"-?(\d+\.?\d*|\.\d+)\Z")
_TIME = rb"([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)(\.\d{1,9})?"
_DATE = rb"\d{4}(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])"
_FORMATS = {
    **dict.fromkeys(("INT", "LENGTH", "NUMINGROUP", "SEQNUM", "TAGNUM", "DAYOFMONTH"), _INT),
    **dict.fromkeys(("FLOAT", "PRICE", "QTY", "AMT", "PRICEOFFSET", "PERCENTAGE"), _FLOAT),
    "CHAR": re.compile(rb".\Z", re.S),
    "BOOLEAN": re.compile(rb"[YN]\Z"),
    "UTCTIMESTAMP": re.compile(_DATE + rb"-" + _TIME + rb"\Z"),
    "UTCTIMEONLY": re.compile(_TIME + rb"\Z"),
    "UTCDATEONLY": re.compile(_DATE + rb"\Z"),
    "UTCDATE": re.compile(_DATE + rb"\Z"),
}
_MULTIPLE = frozenset({"MULTIPLEVALUESTRING", "MULTIPLESTRINGVALUE", "MULTIPLECHARVALUE"})
_TRAILER = frozenset({10, 89, 93})


class Problem(NamedTuple):
    """Why a message is rejected: Reject text, SessionRejectReason (373), RefTagID (371)."""

    text: str
    reason: int
    tag: int | None


class _Field(NamedTuple):
    tag: int
    value: bytes
    scope: frozenset[int] | None  # tags allowed where it stands; None: header/trailer


def validate(dictionary: Dictionary, pairs: Sequence[tuple[bytes | int, bytes]], *,
             user_defined: bool = False) -> Problem | None:  # fmt: skip
    """The first problem of the message ``pairs`` (in wire order), or None if it is valid."""
    items = [(int(t), v) for t, v in pairs]
    msg_type = next((v for t, v in items if t == 35), b"").decode(errors="replace")
    message = dictionary.messages.get(msg_type)
    if message is None:
        return Problem(f"Invalid MsgType {msg_type!r}", INVALID_MSG_TYPE, 35)
    header_tags = dictionary.header.fields | _TRAILER
    head = {t for t, _ in items if t in header_tags}
    body = [(t, v) for t, v in items if t not in header_tags]
    fields: list[_Field] = [_Field(t, v, None) for t, v in items if t in header_tags]
    counts: list[tuple[int, int, int]] = []  # (count tag, declared, entries)
    in_groups: list[int] = []  # required tags missing from group entries
    repeated: list[int] = []  # tags seen twice in one scope (outside a group's entries)
    present = _scope(body, message.fields, message.groups, fields, counts, in_groups, repeated)
    seen_head: set[int] = set()
    for t, _ in items:
        if t in header_tags and t in seen_head:
            repeated.insert(0, t)
            break
        seen_head.add(t)
    if repeated:  # QuickFIX finds it while parsing, before any other check
        return Problem(f"Tag appears more than once: {repeated[0]}", REPEATED_TAG, repeated[0])
    missing = (_missing(dictionary.header.required, head) or _missing(message.required, present)
               or (in_groups[0] if in_groups else None))  # fmt: skip
    if missing is not None:
        return Problem(f"Required tag missing: {missing}", REQUIRED_TAG_MISSING, missing)
    for f in fields:
        problem = _check_field(dictionary, f, user_defined)
        if problem is not None:
            return problem
        for tag, declared, entries in counts:
            if tag == f.tag and declared != entries:
                return Problem(f"Incorrect NumInGroup count for tag {tag}: {declared} declared, "
                               f"{entries} present", INCORRECT_NUM_IN_GROUP, tag)  # fmt: skip
    return None


def _missing(required: frozenset[int], present: set[int]) -> int | None:
    absent = required - present
    return min(absent) if absent else None


def _scope(body, allowed, groups, fields, counts, missing, repeated) -> set[int]:
    """Top level of a message: every field outside a group stands here (allowed or not)."""
    present: set[int] = set()
    at = 0
    while at < len(body):
        tag, value = body[at]
        if tag in present:
            repeated.append(tag)
        present.add(tag)
        fields.append(_Field(tag, value, allowed))
        at += 1
        group = groups.get(tag)
        if group is not None:
            at = _group(body, at, group, value, fields, counts, missing)
    return present


def _group(body, at, group: GroupDef, declared: bytes, fields, counts, missing) -> int:
    """Entries of ``group`` from ``body[at]``; returns where the group ends."""
    entries = 0
    while at < len(body) and body[at][0] == group.delimiter:
        entries += 1
        present: set[int] = set()
        while at < len(body):
            tag, value = body[at]
            if tag not in group.members or tag in present:
                break
            present.add(tag)
            fields.append(_Field(tag, value, group.members))
            at += 1
            nested = group.groups.get(tag)
            if nested is not None:
                at = _group(body, at, nested, value, fields, counts, missing)
        absent = _missing(group.required, present)
        if absent is not None:
            missing.append(absent)
    declared_count = int(declared) if _INT.match(declared) else -1
    if declared_count >= 0:
        counts.append((group.count_tag, declared_count, entries))
    return at


def _check_field(dictionary: Dictionary, f: _Field, user_defined: bool) -> Problem | None:
    if f.value == b"":
        return Problem(f"Tag specified without a value: {f.tag}", TAG_WITHOUT_VALUE, f.tag)
    definition = dictionary.fields.get(f.tag)
    if definition is not None:
        pattern = _FORMATS.get(definition.type)
        if pattern is not None and not pattern.match(f.value):
            return Problem(f"Incorrect data format for value: tag {f.tag} ({definition.type})",
                           INCORRECT_DATA_FORMAT, f.tag)  # fmt: skip
        if definition.values and not _in_enum(definition, f.value):
            return Problem(f"Value is incorrect (out of range) for this tag: {f.tag}",
                           VALUE_INCORRECT, f.tag)  # fmt: skip
    if f.tag >= USER_MIN and not user_defined:
        return None
    if definition is None:
        return Problem(f"Invalid tag number: {f.tag}", INVALID_TAG_NUMBER, f.tag)
    if f.scope is not None and f.tag not in f.scope:
        return Problem(f"Tag not defined for this message type: {f.tag}",
                       TAG_NOT_DEFINED_FOR_MESSAGE, f.tag)  # fmt: skip
    return None


def _in_enum(definition, value: bytes) -> bool:
    text = value.decode(errors="replace")
    if definition.type in _MULTIPLE:
        return all(v in definition.values for v in text.split(" "))
    return text in definition.values
