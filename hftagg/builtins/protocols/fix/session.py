"""FIX 4.4 sessions over asyncio TCP: initiator (:func:`connect`) or acceptor (:class:`Acceptor`).

The session layer does what FIX's session protocol asks:

- Logon (A) / Logout (5), HeartBtInt with Heartbeat (0) and TestRequest (1): a heartbeat after
  ``HeartBtInt`` seconds of silence from us; a TestRequest after ``1.2 x HeartBtInt`` of silence
  from them; disconnect when that goes unanswered as long again.
- Sequence numbers kept in a store (:class:`~hftagg.builtins.protocols.fix.store.FileStore` persists
  them). A message above the expected number is queued and a ResendRequest (2) sent; when the
  gap is filled the queue is processed in order. A message below it is dropped when it has
  PossDupFlag=Y (already seen), else the session logs out ("MsgSeqNum too low").
- A ResendRequest is answered from the store: application messages again with PossDupFlag=Y
  and OrigSendingTime, runs of admin (or unstored) numbers as one SequenceReset-GapFill.
- SequenceReset (4) in both modes (GapFill 123=Y, Reset 123=N) and ``reset_sequence``.
- Reject (3) for a well-framed message that breaks the rules (a required tag missing, a value
  of the wrong format, a tag without a value, an unsupported MsgType, wrong CompIDs); garbled
  messages (bad checksum, body length, truncated) are ignored, as the standard says, and
  reported to ``Application.on_garbled``.
- With ``validate=True``, application messages are also checked against the data dictionary
  (``dictionary``, default ``protocols/fix/FIX44.xml``) as QuickFIX does
  (:mod:`~hftagg.builtins.protocols.fix.validate`: 373 = 11, 1, 4, 6, 5, 0, 2, 16), and a MsgType the
  dictionary knows but ``app_message_types`` excludes gets a BusinessMessageReject (35=j,
  380=3 Unsupported message type), as QuickFIX answers an application's UnsupportedMessageType.
  Without it, such a MsgType gets Reject 373=11. ``validate`` is off by default: QuickFIX's FIX
  4.4 dictionary defines neither RptSeq (83) in the X entries nor MDPriceLevel (1023), which
  market-data venues send; turn it on with a venue dictionary (or for order flow).

Framing uses the validated compiled framer; message parsing and encoding use simplefix. The
application sees every application message (and, for information, admin messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import simplefix

from hftagg.builtins.protocols.fix import messages as m
from hftagg.builtins.protocols.fix.decoder import Framer, reason_name
from hftagg.builtins.protocols.fix.dictionary import DEFAULT_DICTIONARY, load_dictionary
from hftagg.builtins.protocols.fix.kernels import BAD_FIELD as BAD_THIRD_FIELD
from hftagg.builtins.protocols.fix.store import MemoryStore
from hftagg.builtins.protocols.fix.validate import validate as validate_message
from hftagg.errors import ConfigError, Problem

__all__ = [
    "Acceptor",
    "Application",
    "RejectMessage",
    "Session",
    "SessionSettings",
    "connect",
]

log = logging.getLogger("hftagg.fix")

# SessionRejectReason (373)
REQUIRED_TAG_MISSING = 1
TAG_WITHOUT_VALUE = 4
VALUE_OUT_OF_RANGE = 5
INCORRECT_DATA_FORMAT = 6
COMP_ID_PROBLEM = 9
SENDING_TIME_ACCURACY = 10
INVALID_MSG_TYPE = 11
REPEATED_TAG = 13
TAG_OUT_OF_ORDER = 14
UNSUPPORTED_MESSAGE_TYPE = 3  # BusinessRejectReason (380)

_HIGH_WATER = 1 << 20  # bytes buffered for the socket before send() waits
_REQUIRED = {"0": (), "1": (112,), "2": (7, 16), "3": (45,), "4": (36,), "5": (), "A": (98, 108)}
_INT_TAGS = frozenset({7, 16, 34, 36, 45, 98, 108, 146, 264, 267, 268, 371, 373})
_TRAILER = frozenset({10, 89, 93})
#: Routing tags a Reject reverses (QuickFIX's ``Message::reverseRoute``): OnBehalfOf <-> DeliverTo
#: CompID, SubID and LocationID.
_REVERSE_ROUTE = ((115, 128), (128, 115), (116, 129), (129, 116), (144, 145), (145, 144))
_TIME_FORMATS = ("%Y%m%d-%H:%M:%S.%f", "%Y%m%d-%H:%M:%S")


@dataclass(frozen=True)
class SessionSettings:
    """One FIX session's identity and timers. The password is read from the environment
    variable named by ``password_env`` (never from a file)."""

    sender_comp_id: str
    target_comp_id: str
    begin_string: str = "FIX.4.4"
    heartbeat_secs: int = 30
    reset_on_logon: bool = False
    username: str | None = None
    password_env: str | None = None
    logon_timeout_secs: float = 10.0
    logout_timeout_secs: float = 2.0
    app_message_types: frozenset[str] = field(default_factory=frozenset)  # empty: any
    dictionary: str = DEFAULT_DICTIONARY  # relative to protocols/, or absolute
    validate: bool = False  # check application messages against the dictionary
    validate_user_defined_fields: bool = False  # also check tags >= 5000 (QuickFIX's default: N)
    max_latency_secs: float = 120.0  # SendingTime tolerance (QuickFIX's MaxLatency); 0: no check
    max_queued_messages: int = 10_000  # out-of-order messages held for a gap; more: Logout

    def __post_init__(self) -> None:
        problems = []
        if self.heartbeat_secs <= 0:
            problems.append(Problem(
                "heartbeat_secs", self.heartbeat_secs,
                f"FIX session {self.session_id}: HeartBtInt must be a positive number of "
                f"seconds (30 is usual)",
            ))  # fmt: skip
        if self.max_queued_messages < 1:
            problems.append(Problem(
                "max_queued_messages", self.max_queued_messages,
                f"FIX session {self.session_id}: must be at least 1 (10000 is the default)",
            ))  # fmt: skip
        if self.max_latency_secs < 0:
            problems.append(Problem(
                "max_latency_secs", self.max_latency_secs,
                f"FIX session {self.session_id}: must be >= 0 (0 turns the check off)",
            ))  # fmt: skip
        if problems:
            raise ConfigError(problems)

    @property
    def session_id(self) -> str:
        return f"{self.begin_string}-{self.sender_comp_id}-{self.target_comp_id}"

    def password(self) -> str | None:
        if not self.password_env:
            return None
        value = os.environ.get(self.password_env)
        if value is None:
            raise ConfigError([Problem(
                "password_env", self.password_env,
                f"FIX session {self.session_id}: this environment variable (the password) is "
                f"not set; export {self.password_env}=... before starting",
            )])  # fmt: skip
        return value


class RejectMessage(Exception):  # noqa: N818 - it is a signal, the Reject message's name
    """Raised by an application handler: answer the message with a session Reject (35=3)."""

    def __init__(self, text: str, reason: int | None = None, tag: int | None = None) -> None:
        super().__init__(text)
        self.text, self.reason, self.tag = text, reason, tag


class Application:
    """Callbacks of a session; override what you need. Called from the event loop: be quick."""

    def on_logon(self, session: Session) -> None:
        """The session is logged on."""

    def on_logout(self, session: Session) -> None:
        """The session ended (logout or disconnect)."""

    def on_message(self, session: Session, message: simplefix.FixMessage, raw: bytes) -> None:
        """An application message, in sequence (raise :class:`RejectMessage` to reject it)."""

    def on_admin(self, session: Session, message: simplefix.FixMessage) -> None:
        """An admin message, after the session handled it."""

    def on_garbled(self, session: Session, reason: int, raw: bytes) -> None:
        """A span of input that is not a valid message (``reason``: a FIX dead-letter code)."""


class Session:
    """One FIX session on one connection. Use :func:`connect` or :class:`Acceptor`."""

    def __init__(self, settings: SessionSettings, application: Application | None = None,
                 store: MemoryStore | None = None, *, initiator: bool = True) -> None:  # fmt: skip
        self.settings = settings
        self.app = application or Application()
        self.store = store if store is not None else MemoryStore()
        self.initiator = initiator
        self.heartbeat_secs = float(settings.heartbeat_secs)
        self.state = "disconnected"
        self.logged_on = asyncio.Event()
        self.closed = asyncio.Event()
        self.counters = {"received": 0, "sent": 0, "garbled": 0, "rejects_sent": 0,
                         "resend_requests_sent": 0, "resends": 0, "gap_fills_sent": 0,
                         "possdup_dropped": 0, "test_requests_sent": 0, "queue_peak": 0}  # fmt: skip
        self.last_logout_text = ""
        self._begin = b"8=%s\x01" % settings.begin_string.encode()
        self._framer = Framer("")  # BeginString checked here: a wrong one ends the session
        self.dictionary = load_dictionary(settings.dictionary) if settings.validate else None
        self._writer: asyncio.StreamWriter | None = None
        self._queue: dict[int, tuple[simplefix.FixMessage, bytes]] = {}
        self._resend_pending = False
        self._served: set[int] = set()  # ResendRequests answered before their turn
        self._last_sent = self._last_recv = time.monotonic()
        self._test_request: tuple[str, float] | None = None
        self._test_counter = 0
        self._logout_at = 0.0
        self._started = 0.0
        self._tasks: list[asyncio.Task] = []
        self.task: asyncio.Task | None = None  # the run() task, for connect()ed sessions

    # ----------------------------------------------------------------- public API

    @property
    def active(self) -> bool:
        return self.state == "active"

    async def send(self, msg_type: str, body: Iterable[tuple[int, object]] = (), *,
                   transmit: bool = True, header: Iterable[tuple[int, object]] = ()) -> int:  # fmt: skip
        """Send a message with the next sequence number; returns that number.

        Application messages are stored for resending. ``transmit=False`` stores and numbers
        the message without writing it (a lost message, for drills and tests of gap recovery).
        """
        seq = self.store.next_sender_seq
        raw = self._encode(msg_type, seq, body, header=header)
        if msg_type not in m.ADMIN_TYPES:
            self.store.store(seq, raw)
        self.store.next_sender_seq = seq + 1
        if transmit:
            self._write(raw)
            if (
                self._writer is not None
                and self._writer.transport.get_write_buffer_size() > _HIGH_WATER
            ):
                with contextlib.suppress(ConnectionError):
                    await (
                        self._writer.drain()
                    )  # a slow reader: wait rather than buffer without bound
        return seq

    async def test_request(self, test_id: str | None = None) -> str:
        """Send a TestRequest; the answer arrives as a Heartbeat (``on_admin``)."""
        self._test_counter += 1
        test_id = test_id or f"TEST-{self._test_counter}"
        self._test_request = (test_id, time.monotonic())
        self.counters["test_requests_sent"] += 1
        await self.send("1", [(112, test_id)])
        return test_id

    async def reset_sequence(self, new_seq: int) -> None:
        """SequenceReset-Reset: the counterparty expects ``new_seq`` next from us."""
        raw = self._encode("4", self.store.next_sender_seq, [(123, "N"), (36, new_seq)])
        self.store.next_sender_seq = new_seq
        self._write(raw)

    async def logout(self, text: str = "", timeout: float | None = None) -> None:
        """Send Logout and wait (up to ``logout_timeout_secs``) for the answer and disconnect."""
        if self.state in ("active", "logon_sent"):
            self.state = "logout_sent"
            self._logout_at = time.monotonic()
            await self.send("5", [(58, text)] if text else [])
        timeout = self.settings.logout_timeout_secs if timeout is None else timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), timeout)
        self.disconnect()

    def disconnect(self, reason: str = "") -> None:
        """Close the connection now (no Logout)."""
        if reason:
            log.info("FIX %s: disconnecting: %s", self.settings.session_id, reason)
        if self._writer is not None and not self._writer.is_closing():
            self._writer.close()
        was_on = self.state in ("active", "logout_sent")
        self.state = "disconnected"
        if not self.closed.is_set():
            self.closed.set()
            if was_on:
                self.app.on_logout(self)
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()

    async def wait_closed(self) -> None:
        await self.closed.wait()

    # ----------------------------------------------------------------- connection

    async def run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Drive the session on a connection until it closes (initiators send Logon first)."""
        self._writer = writer
        self._started = self._last_recv = self._last_sent = time.monotonic()
        self._tasks = [asyncio.current_task(), asyncio.create_task(self._timer())]
        if self.initiator:
            await self._send_logon()
        else:
            self.state = "awaiting_logon"
        try:
            while not self.closed.is_set():
                data = await reader.read(1 << 16)
                if not data:
                    break
                self._last_recv = time.monotonic()
                for status, raw in self._framer.feed(data):
                    await self._on_frame(status, raw)
                    if self.closed.is_set():
                        break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self.disconnect()
            self._tasks[1].cancel()

    async def _send_logon(self, answer_to: simplefix.FixMessage | None = None) -> None:
        s = self.settings
        body: list[tuple[int, object]] = [(98, 0), (108, int(self.heartbeat_secs))]
        if answer_to is None and s.reset_on_logon:
            self.store.reset()  # a new FIX session: both numbers from 1, our Logon is 1
        # an acceptor's answer carries 141=Y only when the Logon did (as QuickFIX's
        # generateLogon): a QuickFIX initiator would answer an unrequested 141=Y with a new Logon
        if (answer_to is None and s.reset_on_logon) or (
            answer_to is not None and answer_to.get(141) == b"Y"
        ):
            body.append((141, "Y"))
        if answer_to is None:
            if s.username:
                body.append((553, s.username))
            password = s.password()
            if password is not None:
                body.append((554, password))
        self.state = "logon_sent" if answer_to is None else "active"
        await self.send("A", body)

    def _write(self, raw: bytes) -> None:
        if self._writer is None or self._writer.is_closing():
            return
        self._writer.write(raw)
        self._last_sent = time.monotonic()
        self.counters["sent"] += 1

    def _encode(self, msg_type: str, seq: int, body, **kwargs) -> bytes:
        s = self.settings
        return m.encode(s.begin_string, msg_type, s.sender_comp_id, s.target_comp_id, seq, body,
                        **kwargs)  # fmt: skip

    async def _timer(self) -> None:
        s = self.settings
        tick = max(0.02, min(1.0, self.heartbeat_secs / 4, s.logon_timeout_secs / 4,
                             s.logout_timeout_secs / 4))  # fmt: skip
        while not self.closed.is_set():
            await asyncio.sleep(tick)
            now = time.monotonic()
            if (
                self.state in ("logon_sent", "awaiting_logon")
                and now - self._started > self.settings.logon_timeout_secs
            ):
                self.disconnect(
                    "no Logon answer" if self.initiator else
                    f"no valid Logon within logon_timeout_secs = {s.logon_timeout_secs:g}"
                )  # fmt: skip
            elif (
                self.state == "logout_sent"
                and now - self._logout_at > self.settings.logout_timeout_secs
            ):
                self.disconnect("no Logout answer")
            elif self.state == "active":
                await self._heartbeat_check(now)

    async def _heartbeat_check(self, now: float) -> None:
        hb = self.heartbeat_secs
        if now - self._last_sent >= hb:
            await self.send("0")
        silence = now - self._last_recv
        if self._test_request is not None:
            if now - self._test_request[1] >= 1.2 * hb + 0.5 and silence >= 2.4 * hb:
                self.disconnect(f"no answer to TestRequest {self._test_request[0]}")
        elif silence >= 1.2 * hb + 0.1:
            await self.test_request()

    # ----------------------------------------------------------------- inbound

    async def _on_frame(self, status: int, raw: bytes) -> None:
        if status == 0 and not raw.startswith(self._begin):
            await self._bad_begin_string(raw)
            return
        if status == 0:
            second = raw.find(b"\x01", raw.find(b"\x01") + 1)
            if not raw.startswith(b"35=", second + 1):
                status = BAD_THIRD_FIELD  # garbled: no sequence number consumed
        if status != 0:
            self.counters["garbled"] += 1
            log.warning("FIX %s: garbled input ignored (%s, %d bytes)", self.settings.session_id,
                        reason_name(status), len(raw))  # fmt: skip
            self.app.on_garbled(self, status, raw)
            return
        self.counters["received"] += 1
        parser = simplefix.FixParser(allow_empty_values=True)
        parser.append_buffer(raw)
        msg = parser.get_message()
        if msg is None:
            self.app.on_garbled(self, 0x0F11, raw)
            return
        await self._on_message(msg, raw)

    async def _bad_begin_string(self, raw: bytes) -> None:
        """A message for another FIX version: Logout and disconnect (QuickFIX's
        UnsupportedVersion); before Logon, just disconnect."""
        got = raw[2 : raw.find(b"\x01")].decode(errors="replace")
        text = f"Incorrect BeginString {got!r}, expecting {self.settings.begin_string!r}"
        self.counters["garbled"] += 1
        if self.state == "active":
            await self._fatal(text)
        else:
            self.disconnect(text)

    async def _on_message(self, msg: simplefix.FixMessage, raw: bytes) -> None:
        msg_type = (msg.get(35) or b"").decode()
        seq_text = msg.get(34)
        if not seq_text or not seq_text.isdigit():
            await self._fatal(f"MsgSeqNum (34) missing or not a number in {msg_type or '?'}")
            return
        seq = int(seq_text)
        if not await self._verify_header(msg, msg_type, seq):
            return
        if msg_type == "4" and msg.get(123) != b"Y":
            await self._on_sequence_reset(msg, seq, msg_type)
            return
        expected = self.store.next_target_seq
        if seq > expected:
            if msg_type == "2" and not self._validate(msg, msg_type):
                await self._on_resend_request(msg, seq)  # served now: both asking must not wait
                self._served.add(seq)
            await self._on_gap(msg, raw, msg_type, seq, expected)
            return
        if seq < expected:
            await self._on_low(msg, msg_type, seq, expected)
            return
        await self._process(msg, raw, msg_type, seq)
        await self._drain_queue()

    async def _verify_header(self, msg, msg_type: str, seq: int) -> bool:
        """Logon state, CompIDs and SendingTime (QuickFIX's ``verify`` before the sequence
        checks); False when the message was answered (Reject, Logout or disconnect)."""
        expected = self.store.next_target_seq
        logging_on = self.state in ("disconnected", "logon_sent", "awaiting_logon")
        if logging_on and msg_type != "A" and not self.initiator:
            self.disconnect(f"first message is {msg_type!r}, not Logon")
            return False
        for tag in (49, 56):
            value = msg.get(tag)
            if value is None or value == b"":
                if logging_on:
                    self.disconnect(
                        f"Logon without a {'SenderCompID' if tag == 49 else 'TargetCompID'}"
                    )
                    return False
                if seq == expected:
                    self.store.next_target_seq = seq + 1
                reason = REQUIRED_TAG_MISSING if value is None else TAG_WITHOUT_VALUE
                text = f"tag {tag} {'missing' if value is None else 'has no value'}"
                await self._reject(seq, msg_type, text, reason, tag, msg)
                return False
        if msg.get(49) != self.settings.target_comp_id.encode() or msg.get(56) != \
                self.settings.sender_comp_id.encode():  # fmt: skip
            await self._reject(seq, msg_type, "CompID problem", COMP_ID_PROBLEM, 49, msg)
            await self._fatal("wrong SenderCompID/TargetCompID")
            return False
        bad_time = self._check_time(msg)
        if bad_time is not None:
            if seq == expected:
                self.store.next_target_seq = seq + 1
            await self._reject(seq, msg_type, bad_time, SENDING_TIME_ACCURACY, 52, msg)
            await self._fatal(f"SendingTime accuracy problem: {bad_time}")
            return False
        if (
            msg_type == "A"
            and self.state != "logon_sent"
            and (
                msg.get(141) == b"Y"
                or (self.state == "awaiting_logon" and self.settings.reset_on_logon)
            )
        ):
            self.store.reset()
        elif msg_type == "A" and self.state == "logon_sent" and msg.get(141) == b"Y":
            self.store.next_target_seq = min(seq, expected)  # they restarted their numbers
        return True

    async def _on_gap(self, msg, raw, msg_type: str, seq: int, expected: int) -> None:
        if msg_type == "A":
            self.store.next_target_seq = seq  # the Logon itself is processed; ask for the rest
            await self._process(msg, raw, msg_type, seq)
            self.store.next_target_seq = expected
        elif msg_type == "5":
            await self._process(msg, raw, msg_type, seq)
            return
        else:
            limit = self.settings.max_queued_messages
            if len(self._queue) >= limit and seq not in self._queue:
                await self._fatal(
                    f"out-of-order queue full: {len(self._queue)} messages held waiting for "
                    f"MsgSeqNum {expected} (max_queued_messages = {limit})"
                )
                return
            self._queue[seq] = (msg, raw)
            self.counters["queue_peak"] = max(self.counters["queue_peak"], len(self._queue))
        if not self._resend_pending:
            self._resend_pending = True
            self.counters["resend_requests_sent"] += 1
            log.info("FIX %s: gap %d..%d, sending ResendRequest", self.settings.session_id,
                     expected, seq - 1)  # fmt: skip
            await self.send("2", [(7, expected), (16, 0)])

    async def _on_low(self, msg, msg_type: str, seq: int, expected: int) -> None:
        if msg.get(43) == b"Y":
            if msg_type != "4" and msg.get(122) is None:
                await self._reject(seq, msg_type, "OrigSendingTime missing on a PossDup",
                                   REQUIRED_TAG_MISSING, 122, msg)  # fmt: skip
            self.counters["possdup_dropped"] += 1
            return
        await self._fatal(f"MsgSeqNum too low, expecting {expected} but received {seq}")

    async def _drain_queue(self) -> None:
        while self._queue:
            expected = self.store.next_target_seq
            for stale in [s for s in self._queue if s < expected]:
                del self._queue[stale]
            if expected not in self._queue:
                break
            msg, raw = self._queue.pop(expected)
            msg_type = (msg.get(35) or b"").decode()
            await self._process(msg, raw, msg_type, expected)
        if not self._queue:
            self._resend_pending = False

    async def _process(self, msg, raw: bytes, msg_type: str, seq: int) -> None:
        """A message in sequence: validate (Reject consumes the number), then handle it."""
        if seq in self._served:  # a ResendRequest answered when it arrived early: count it
            self._served.discard(seq)
            self.store.next_target_seq = seq + 1
            self.app.on_admin(self, msg)
            return
        problem = self._validate(msg, msg_type)
        self.store.next_target_seq = seq + 1
        if problem is not None:
            if problem[1] is None:
                await self._business_reject(seq, msg_type, problem[0])
            else:
                await self._reject(seq, msg_type, *problem, msg)
            return
        if msg_type in m.ADMIN_TYPES:
            await self._on_admin(msg, msg_type, seq)
            self.app.on_admin(self, msg)
            return
        try:
            self.app.on_message(self, msg, raw)
        except RejectMessage as exc:
            await self._reject(seq, msg_type, exc.text, exc.reason, exc.tag, msg)

    def _check_time(self, msg) -> str | None:
        """SendingTime (52) within ``max_latency_secs`` of our clock, and a PossDup's
        OrigSendingTime (122) not later than its SendingTime (QuickFIX's isGoodTime and
        doPossDup): the problem's text, or None. An absent or unparsable 52 is left to
        ``_validate``."""
        sent = _parse_time(msg.get(52))
        if sent is None:
            return None
        limit = self.settings.max_latency_secs
        if limit > 0:
            skew = (dt.datetime.now(dt.UTC) - sent).total_seconds()
            if abs(skew) > limit:
                return (f"SendingTime {msg.get(52).decode()} is {skew:+.3f} s from our clock "
                        f"(max_latency_secs = {limit:g})")  # fmt: skip
        if msg.get(43) == b"Y":
            orig = _parse_time(msg.get(122))
            if orig is not None and orig > sent:
                return (f"OrigSendingTime {msg.get(122).decode()} is later than SendingTime "
                        f"{msg.get(52).decode()}")  # fmt: skip
        return None

    def _validate(self, msg, msg_type: str) -> tuple[str, int | None, int | None] | None:
        """``(text, 373 reason, tag)``; reason None: a BusinessMessageReject."""
        problem = self._check_structure(msg, msg_type) or self._validate_admin(msg, msg_type)
        if problem is not None:
            return problem
        for tag, value in msg.pairs:
            if value == b"":
                return f"tag {int(tag)} has no value", TAG_WITHOUT_VALUE, int(tag)
        if not msg_type:
            return "MsgType (35) missing", REQUIRED_TAG_MISSING, 35
        if msg.get(52) is None:
            return "SendingTime (52) missing", REQUIRED_TAG_MISSING, 52
        if msg.get(43) == b"Y" and msg.get(122) is None and msg_type != "4":
            return "OrigSendingTime (122) missing on a PossDup", REQUIRED_TAG_MISSING, 122
        problem = self._validate_app(msg, msg_type) if msg_type not in m.ADMIN_TYPES else None
        if problem is not None:
            return problem
        for tag in _REQUIRED.get(msg_type, ()):
            if msg.get(tag) is None:
                return f"required tag {tag} missing", REQUIRED_TAG_MISSING, tag
        for tag, value in msg.pairs:
            if int(tag) in _INT_TAGS and not value.lstrip(b"-").isdigit():
                return f"tag {int(tag)} must be an integer", INCORRECT_DATA_FORMAT, int(tag)
        return None

    def _validate_admin(self, msg, msg_type: str) -> tuple[str, int, int | None] | None:
        """An admin message against the dictionary (with ``validate``), as QuickFIX does."""
        if self.dictionary is None or msg_type not in m.ADMIN_TYPES:
            return None
        found = validate_message(
            self.dictionary, msg.pairs, user_defined=self.settings.validate_user_defined_fields
        )
        return None if found is None else (found.text, found.reason, found.tag)

    def _check_structure(self, msg, msg_type: str) -> tuple[str, int, int] | None:
        """Header fields after a body field (373 = 14) and a repeated tag (373 = 13): a header
        tag, or any tag of an admin message outside Logon's NoMsgTypes group when there is no
        dictionary (with one, :func:`validate` knows the groups)."""
        body_seen = False
        seen: set[int] = set()
        check_body = self.dictionary is None and msg_type in m.ADMIN_TYPES
        for raw_tag, _ in msg.pairs:
            tag = int(raw_tag)
            if tag in m.HEADER_TAGS:
                if body_seen:
                    return (f"Tag specified out of required order: header tag {tag} after body "
                            f"fields", TAG_OUT_OF_ORDER, tag)  # fmt: skip
            elif tag not in _TRAILER:
                body_seen = True
            if tag in seen and (tag in m.HEADER_TAGS or (check_body and tag not in (372, 385))):
                return f"Tag appears more than once: {tag}", REPEATED_TAG, tag
            seen.add(tag)
        return None

    def _validate_app(self, msg, msg_type: str) -> tuple[str, int | None, int | None] | None:
        """An application message against the dictionary (with ``validate``) and the types
        served (``app_message_types``)."""
        allowed = self.settings.app_message_types
        if self.dictionary is not None:
            problem = validate_message(
                self.dictionary, msg.pairs, user_defined=self.settings.validate_user_defined_fields
            )
            if problem is not None:
                return problem.text, problem.reason, problem.tag
            if allowed and msg_type not in allowed:
                return f"Unsupported Message Type {msg_type!r}", None, None
        if allowed and msg_type not in allowed:
            return f"unsupported MsgType {msg_type!r}", INVALID_MSG_TYPE, 35
        return None

    async def _reject(self, ref_seq: int, msg_type: str, text: str, reason: int | None,
                      tag: int | None, msg=None) -> None:  # fmt: skip
        """Reject (35=3) of message ``ref_seq``; its routing tags are reversed (OnBehalfOf*
        become DeliverTo* and back) as QuickFIX's ``reverseRoute`` does."""
        self.counters["rejects_sent"] += 1
        log.warning("FIX %s: rejecting %s #%d: %s", self.settings.session_id, msg_type, ref_seq,
                    text)  # fmt: skip
        body: list[tuple[int, object]] = [(45, ref_seq)]
        if tag is not None:
            body.append((371, tag))
        if msg_type:
            body.append((372, msg_type))
        if reason is not None:
            body.append((373, reason))
        body.append((58, text))
        header = []
        if msg is not None:
            header = [
                (dst, msg.get(src)) for src, dst in _REVERSE_ROUTE if msg.get(src) is not None
            ]
        await self.send("3", body, header=header)

    async def _business_reject(self, ref_seq: int, msg_type: str, text: str) -> None:
        """BusinessMessageReject (35=j) 380=3: a MsgType valid in FIX but not served here."""
        self.counters["rejects_sent"] += 1
        log.warning("FIX %s: business-rejecting %s #%d: %s", self.settings.session_id, msg_type,
                    ref_seq, text)  # fmt: skip
        body = [(45, ref_seq), (372, msg_type), (380, UNSUPPORTED_MESSAGE_TYPE), (58, text)]
        await self.send("j", body)

    async def _fatal(self, text: str) -> None:
        """A session-level error that ends the session: Logout with the reason, disconnect."""
        log.error("FIX %s: %s", self.settings.session_id, text)
        self.last_logout_text = text
        if self._writer is not None and not self._writer.is_closing():
            await self.send("5", [(58, text)])
        self.disconnect(text)

    # ----------------------------------------------------------------- admin messages

    async def _on_admin(self, msg, msg_type: str, seq: int) -> None:
        handler = _ADMIN_HANDLERS.get(msg_type)
        if handler is not None:
            await handler(self, msg, seq)

    async def _on_logon(self, msg, seq: int) -> None:
        heartbeat = int(msg.get(108))
        if heartbeat <= 0:
            self.store.next_target_seq = seq  # a refused Logon does not count
            await self._fatal(f"Logon rejected: HeartBtInt (108) is {heartbeat}, must be > 0")
            return
        if not self.initiator:
            expected = self.settings.password()
            if expected is not None and (msg.get(554) or b"").decode() != expected:
                self.store.next_target_seq = seq  # a refused Logon does not count
                await self._fatal("Logon rejected: invalid password")
                return
            self.heartbeat_secs = float(heartbeat)
            await self._send_logon(answer_to=msg)
        self.state = "active"
        self.logged_on.set()
        log.info("FIX %s: logged on (HeartBtInt %gs)", self.settings.session_id,
                 self.heartbeat_secs)  # fmt: skip
        self.app.on_logon(self)

    async def _on_heartbeat(self, msg, seq: int) -> None:
        if self._test_request is not None and msg.get(112) == self._test_request[0].encode():
            self._test_request = None

    async def _on_test_request(self, msg, seq: int) -> None:
        await self.send("0", [(112, msg.get(112))])

    async def _on_resend_request(self, msg, seq: int) -> None:
        """Answer from the store in time linear in the messages stored, never in the range's
        values: BeginSeqNo below 1 or past the last message sent, or EndSeqNo (not 0) below
        BeginSeqNo, is a Reject 373 = 5 (nothing to resend)."""
        begin, end = int(msg.get(7)), int(msg.get(16))
        last = self.store.next_sender_seq - 1
        problem = None
        if begin < 1 or begin > last:
            problem = (f"BeginSeqNo {begin} out of range: messages sent are 1..{last}", 7)
        elif end != 0 and end < begin:
            problem = (f"EndSeqNo {end} below BeginSeqNo {begin}", 16)
        if problem is not None:
            await self._reject(seq, "2", problem[0], VALUE_OUT_OF_RANGE, problem[1], msg)
            return
        end = last if end == 0 or end > last else end
        stored = self.store.get(begin, end)
        at = begin
        for n in sorted(stored):
            if n > at:
                self._gap_fill(at, n)
            self._resend(stored[n])
            at = n + 1
        if at <= end:
            self._gap_fill(at, end + 1)

    def _gap_fill(self, seq: int, new_seq: int) -> None:
        now = m.utc_timestamp()
        self.counters["gap_fills_sent"] += 1
        self._write(self._encode("4", seq, [(123, "Y"), (36, new_seq)], sending_time=now,
                                 orig_sending_time=now))  # fmt: skip

    def _resend(self, raw: bytes) -> None:
        parser = simplefix.FixParser()
        parser.append_buffer(raw)
        old = parser.get_message()
        body = [(int(t), v) for t, v in old.pairs if int(t) not in m.HEADER_TAGS and int(t) != 10]
        self.counters["resends"] += 1
        self._write(self._encode(old.get(35).decode(), int(old.get(34)), body,
                                 orig_sending_time=old.get(52)))  # fmt: skip

    async def _on_sequence_reset(self, msg, seq: int, msg_type: str) -> None:
        new_seq = int(msg.get(36) or 0)
        expected = self.store.next_target_seq
        gap_fill = msg.get(123) == b"Y"
        if new_seq < expected and not (gap_fill and msg.get(43) == b"Y"):
            await self._reject(seq, msg_type, f"NewSeqNo {new_seq} below expected {expected}",
                               VALUE_OUT_OF_RANGE, 36, msg)  # fmt: skip
            return
        if new_seq >= expected:
            self.store.next_target_seq = new_seq
        await self._drain_queue()

    async def _on_gap_fill(self, msg, seq: int) -> None:
        """A SequenceReset-GapFill in sequence (``_process`` already counted it).

        Messages queued inside the filled range were really sent and are valid: they are
        processed (in order) rather than dropped, even when the counterparty chose to fill over
        them (QuickFIX's memory store does so for messages sent after a sequence jump).
        """
        new_seq = int(msg.get(36))
        for held in sorted(n for n in self._queue if seq < n < new_seq):
            held_msg, held_raw = self._queue.pop(held)
            self.store.next_target_seq = held
            await self._process(held_msg, held_raw, (held_msg.get(35) or b"").decode(), held)
        if new_seq > self.store.next_target_seq:
            self.store.next_target_seq = new_seq

    async def _on_logout(self, msg, seq: int) -> None:
        self.last_logout_text = (msg.get(58) or b"").decode(errors="replace")
        if self.state != "logout_sent":
            self.state = "logout_sent"
            await self.send("5")
            if self._writer is not None:
                with contextlib.suppress(ConnectionError):
                    await self._writer.drain()
        self.disconnect()


_ADMIN_HANDLERS: dict[str, Callable] = {
    "A": Session._on_logon,
    "0": Session._on_heartbeat,
    "1": Session._on_test_request,
    "2": Session._on_resend_request,
    "4": Session._on_gap_fill,
    "5": Session._on_logout,
}


async def connect(host: str, port: int, settings: SessionSettings,
                  application: Application | None = None, store: MemoryStore | None = None,
                  *, timeout: float | None = None) -> Session:  # fmt: skip
    """Open a connection as initiator, log on, and return the active session.

    Raises ``TimeoutError`` (and closes the connection) if the Logon is not answered within
    ``timeout`` (default ``settings.logon_timeout_secs``), ``ConnectionError`` if the
    counterparty ends the session first.
    """
    reader, writer = await asyncio.open_connection(host, port)
    session = Session(settings, application, store, initiator=True)
    task = asyncio.create_task(session.run(reader, writer))
    session.task = task
    wait_logon = asyncio.create_task(session.logged_on.wait())
    wait_closed = asyncio.create_task(session.closed.wait())
    done, _ = await asyncio.wait({wait_logon, wait_closed}, return_when=asyncio.FIRST_COMPLETED,
                                 timeout=timeout or settings.logon_timeout_secs)  # fmt: skip
    for pending in (wait_logon, wait_closed):
        pending.cancel()
    if not session.logged_on.is_set():
        session.disconnect("logon failed")
        if wait_closed in done:
            raise ConnectionError(
                f"FIX {settings.session_id}: the counterparty ended the session "
                f"before Logon completed ({session.last_logout_text or 'no text'})"
            )
        raise TimeoutError(f"FIX {settings.session_id}: no Logon answer from {host}:{port}")
    return session


class Acceptor:
    """Accepts FIX sessions on a TCP port (loopback by default).

    ``sessions`` are this side's settings (SenderCompID = ours); a connection is routed by the
    pair of CompIDs of its first message (its SenderCompID is a session's ``target_comp_id``
    and its TargetCompID our ``sender_comp_id``); anything else is closed before a session or
    its store is touched. ``application`` is shared by all sessions or made per connection by a
    factory callable; ``store_factory(settings)`` makes each session's store (default: in
    memory, kept across reconnects of the same session).

    As QuickFIX does: a connection that sends no Logon within the session's (or, before the
    CompIDs are known, the longest) ``logon_timeout_secs`` is closed, whatever it sent; a second
    connection for a session that is already connected is closed and the first is untouched.
    ``counters`` counts refused connections by reason.
    """

    def __init__(
        self,
        sessions: Iterable[SessionSettings],
        application: Application | Callable[[], Application] | None = None,
        store_factory: Callable[[SessionSettings], MemoryStore] | None = None,
    ) -> None:
        self.settings = {(s.target_comp_id, s.sender_comp_id): s for s in sessions}
        self._application = application
        self._store_factory = store_factory or (lambda s: MemoryStore())
        self._stores: dict[str, MemoryStore] = {}
        self.sessions: list[Session] = []
        self.server: asyncio.AbstractServer | None = None
        self.new_session = asyncio.Event()
        self.counters = {"unknown_session": 0, "duplicate_logon": 0, "logon_timeout": 0}
        self._logon_timeout = max((s.logon_timeout_secs for s in self.settings.values()),
                                  default=10.0)  # fmt: skip

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the port (useful with ``port=0``)."""
        self.server = await asyncio.start_server(self._on_connection, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:  # fmt: skip
        peer = writer.get_extra_info("peername")
        first = b""
        deadline = time.monotonic() + self._logon_timeout
        try:
            # enough to see 49= and 56= of the Logon
            while (_field_of(first, 49) is None or _field_of(first, 56) is None) and len(
                first
            ) < 4096:
                data = await asyncio.wait_for(reader.read(1 << 16), deadline - time.monotonic())
                if not data:
                    writer.close()
                    return
                first += data
        except ConnectionError:
            writer.close()
            return
        except TimeoutError:
            self.counters["logon_timeout"] += 1
            log.warning("FIX acceptor: no Logon from %s within %gs (%d bytes received), "
                        "closing", peer, self._logon_timeout, len(first))  # fmt: skip
            writer.close()
            return
        key = (_field_of(first, 49) or "", _field_of(first, 56) or "")
        settings = self.settings.get(key)
        if settings is None:
            self.counters["unknown_session"] += 1
            log.warning("FIX acceptor: no session for SenderCompID %r TargetCompID %r from %s, "
                        "closing", key[0], key[1], peer)  # fmt: skip
            writer.close()
            return
        if any(x.settings.session_id == settings.session_id and not x.closed.is_set()
               for x in self.sessions):  # fmt: skip
            self.counters["duplicate_logon"] += 1
            log.warning("FIX acceptor: session %s is already connected; refusing a second "
                        "Logon from %s", settings.session_id, peer)  # fmt: skip
            writer.close()
            return
        app = self._application() if callable(self._application) and not isinstance(
            self._application, Application) else self._application  # fmt: skip
        store = self._stores.get(settings.session_id)
        if store is None:
            store = self._stores[settings.session_id] = self._store_factory(settings)
        session = Session(settings, app, store, initiator=False)
        self.sessions.append(session)
        self.new_session.set()
        await session.run(_Prepend(first, reader), writer)

    async def stop(self) -> None:
        for session in self.sessions:
            if session.active:
                await session.logout("acceptor stopping", timeout=1.0)
            session.disconnect()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


class _Prepend:
    """A reader that first returns bytes already read (the Logon used to pick the session)."""

    def __init__(self, first: bytes, reader: asyncio.StreamReader) -> None:
        self._first, self._reader = first, reader

    async def read(self, n: int) -> bytes:
        if self._first:
            data, self._first = self._first, b""
            return data
        return await self._reader.read(n)


def _field_of(data: bytes, tag: int) -> str | None:
    """The value of ``tag`` in the first message in ``data`` (None until it is all there)."""
    key = b"\x01%d=" % tag
    start = data.find(key)
    if start < 0:
        return None
    end = data.find(b"\x01", start + len(key))
    return data[start + len(key) : end].decode(errors="replace") if end > 0 else None


def _parse_time(value: bytes | None) -> dt.datetime | None:
    """A UTCTimestamp (``YYYYMMDD-HH:MM:SS[.fff...]``) as an aware datetime, or None."""
    if not value:
        return None
    text = value.decode(errors="replace")
    if "." in text:  # strptime's %f takes at most 6 digits (FIX allows 9)
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    for fmt in _TIME_FORMATS:
        with contextlib.suppress(ValueError):
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)
    return None
