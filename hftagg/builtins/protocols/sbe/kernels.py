"""Compiled SBE passes: find messages in a buffer, walk their groups, gather blocks into rows.

Python calls each once per buffer. ``scan`` finds every frame (hftagg's 2-byte length prefix, the
Simple Open Framing Header, or CME MDP3 packets), checks the message header against the schema
tables built by :mod:`hftagg.builtins.protocols.sbe.codec`, walks repeating groups and var data with an
explicit stack, and records messages, group entries, var-data fields and errors in preallocated
arrays. ``gather_rows`` copies fixed blocks into a row matrix (a structured array's bytes);
``gather_records`` copies mapped fields straight into hftagg record batches.
"""

from __future__ import annotations

import numba
import numpy as np

from hftagg.kernels.options import NJIT as _NJIT
from hftagg.records.reasons import REASONS

__all__ = ["Reason", "gather_records", "gather_rows", "scan"]


# framings
LENGTH2, SOFH, MDP3 = 0, 1, 2
SOFH_SBE_LE, SOFH_SBE_BE = 0xEB50, 0x5BE0
MDP3_PACKET_HEADER = 12

# header table columns
H_SIZE, H_BL_OFF, H_BL_SZ, H_TID_OFF, H_TID_SZ, H_SID_OFF, H_SID_SZ, H_VER_OFF, H_VER_SZ = range(9)
H_SCHEMA_ID, H_BIG, H_MAX_VERSION, H_MAX_FRAME = 9, 10, 11, 12
HEADER_COLUMNS = 13

# node table columns (node 0.. : message roots, groups, var data)
N_KIND, N_FIRST, N_COUNT, N_DIM, N_BL_OFF, N_BL_SZ, N_NUM_OFF, N_NUM_SZ, N_SINCE, N_FIXED = range(
    10
)
NODE_COLUMNS = 10
K_ROOT, K_GROUP, K_DATA = 0, 1, 2

# counts
C_MSGS, C_ENTRIES, C_DATAS, C_ERRORS, C_CONSUMED, C_STATUS = range(6)
FULL_MSGS, FULL_ENTRIES, FULL_DATAS, FULL_ERRORS = 1, 2, 3, 4
MAX_DEPTH = 16
# an open bad run (``run``): reason, start offset in the buffer (negative: in bytes an earlier
# scan already consumed), detail, the end its first frame declared (-1: none)
R_REASON, R_START, R_DETAIL, R_SKIP = range(4)
RUN_SIZE = 4


class Reason:
    """Dead-letter reason codes for SBE input (``dead_letter.reason``), in the ``sbe`` range
    0x0B00..0x0BFF of :data:`hftagg.records.reasons.REASONS`."""

    TRUNCATED = 0x0B01  # the frame or packet ends before the message does
    BAD_FRAME = 0x0B02  # bytes that are not a frame (impossible length or SOFH encoding type)
    WRONG_SCHEMA = 0x0B03  # header schemaId is not this schema's id
    BAD_VERSION = 0x0B04  # header version older than the message's sinceVersion
    UNKNOWN_TEMPLATE = 0x0B05  # templateId not in the schema
    BLOCK_TOO_SMALL = 0x0B06  # blockLength smaller than the fields of that version need
    GROUP_OVERRUN = 0x0B07  # group dimensions or var data run past the frame
    LENGTH_MISMATCH = 0x0B08  # the frame length and the message disagree
    TOO_DEEP = 0x0B09  # groups nested deeper than the decoder's stack
    END_OF_STREAM = 0x0B0A  # an incomplete frame was left when the stream ended
    UNMAPPED_TEMPLATE = 0x0B0B  # a well-formed message no record mapping covers (detail: id)

    NAMES = {
        TRUNCATED: "truncated",
        BAD_FRAME: "bad frame",
        WRONG_SCHEMA: "wrong schema id",
        BAD_VERSION: "bad version",
        UNKNOWN_TEMPLATE: "unknown template",
        BLOCK_TOO_SMALL: "block length too small",
        GROUP_OVERRUN: "group/data overrun",
        LENGTH_MISMATCH: "length mismatch",
        TOO_DEEP: "groups nested too deep",
        END_OF_STREAM: "end of stream",
        UNMAPPED_TEMPLATE: "unmapped template",
    }


REASONS.register_all("sbe", {code: (name.replace(" ", "_").replace("/", "_"), name)
                             for code, name in Reason.NAMES.items()})  # fmt: skip
# the codes as module globals: compiled code reads them as constants
TRUNCATED, BAD_FRAME, WRONG_SCHEMA = Reason.TRUNCATED, Reason.BAD_FRAME, Reason.WRONG_SCHEMA
BAD_VERSION, UNKNOWN_TEMPLATE = Reason.BAD_VERSION, Reason.UNKNOWN_TEMPLATE
BLOCK_TOO_SMALL, GROUP_OVERRUN = Reason.BLOCK_TOO_SMALL, Reason.GROUP_OVERRUN
LENGTH_MISMATCH, TOO_DEEP = Reason.LENGTH_MISMATCH, Reason.TOO_DEEP


@numba.njit(inline="always", **_NJIT)
def _rd(buf, o, size, big):
    if not big:
        if size == 2:
            return np.int64(buf[o]) | (np.int64(buf[o + 1]) << 8)
        if size == 1:
            return np.int64(buf[o])
        if size == 4:
            return (
                np.int64(buf[o])
                | (np.int64(buf[o + 1]) << 8)
                | (np.int64(buf[o + 2]) << 16)
                | (np.int64(buf[o + 3]) << 24)
            )
    v = np.uint64(0)
    if big:
        for i in range(size):
            v = (v << np.uint64(8)) | np.uint64(buf[o + i])
    else:
        for i in range(size):
            v |= np.uint64(buf[o + i]) << np.uint64(8 * i)
    return np.int64(v)


@numba.njit(inline="always", **_NJIT)
def _frame(buf, pos, end, framing, hdr, final):
    """(frame length, SBE header offset in the frame); length -1: need more bytes; -2: bad."""
    hsize = hdr[H_SIZE]
    if framing == SOFH:
        if end - pos < 6:
            return -1, 0
        length = _rd(buf, pos, 4, True)
        enc = _rd(buf, pos + 4, 2, True)
        expect = SOFH_SBE_BE if hdr[H_BIG] else SOFH_SBE_LE
        if enc != expect or length < 6 + hsize or length > hdr[H_MAX_FRAME]:
            return -2, 0
        return length, 6
    if end - pos < 2:
        return -1, 0
    length = _rd(buf, pos, 2, False)
    if length < 2 + hsize or length > hdr[H_MAX_FRAME]:
        return -2, 0
    return length, 2


@numba.njit(inline="always", **_NJIT)
def _header(buf, h, hdr):
    big = hdr[H_BIG]
    bl = _rd(buf, h + hdr[H_BL_OFF], hdr[H_BL_SZ], big)
    tid = _rd(buf, h + hdr[H_TID_OFF], hdr[H_TID_SZ], big)
    sid = _rd(buf, h + hdr[H_SID_OFF], hdr[H_SID_SZ], big)
    ver = _rd(buf, h + hdr[H_VER_OFF], hdr[H_VER_SZ], big)
    return bl, tid, sid, ver


@numba.njit(inline="always", **_NJIT)
def _check_header(bl, tid, sid, ver, hdr, tid_slot, slot_root, nodes, min_bl):
    """(reason, detail, slot); reason 0 when the header fits the schema."""
    if sid != hdr[H_SCHEMA_ID]:
        return WRONG_SCHEMA, sid, -1
    if tid < 0 or tid >= tid_slot.shape[0] or tid_slot[tid] < 0:
        return UNKNOWN_TEMPLATE, tid, -1
    slot = tid_slot[tid]
    root = slot_root[slot]
    if ver < nodes[root, N_SINCE]:
        return BAD_VERSION, ver, slot
    v = min(ver, hdr[H_MAX_VERSION])
    if bl < min_bl[root, v]:
        return BLOCK_TOO_SMALL, bl, slot
    return 0, 0, slot


@numba.njit(**_NJIT)
def _plausible(buf, q, end, framing, hdr, tid_slot, slot_root, nodes, min_bl):
    """1 if a frame could start at ``q``, 0 if not, -1 if more bytes are needed to tell."""
    length, pre = _frame(buf, q, end, framing, hdr, False)
    if length == -1:
        return -1
    if length < 0:
        return 0
    if end - q < pre + hdr[H_SIZE]:
        return -1
    bl, tid, sid, ver = _header(buf, q + pre, hdr)
    reason, _, slot = _check_header(bl, tid, sid, ver, hdr, tid_slot, slot_root, nodes, min_bl)
    if reason != 0:
        return 0
    if pre + hdr[H_SIZE] + bl > length:
        return 0
    if nodes[slot_root[slot], N_FIXED] and pre + hdr[H_SIZE] + bl != length:
        return 0
    return 1


@numba.njit(**_NJIT)
def _walk(buf, p, fe, ver, root, nodes, children, min_bl, big, max_version, msg,  # noqa: C901
          e_node, e_parent, e_msg, e_off, e_bl, d_node, d_parent, d_msg, d_off, d_len,
          counts, st_node, st_child, st_left, st_bl, st_entry):  # fmt: skip
    """Walk groups and var data after the root block at ``p``; return (end, reason)."""
    depth = 0
    st_node[0] = root
    st_child[0] = 0
    st_left[0] = 1
    st_entry[0] = -1
    v = min(ver, max_version)
    while True:
        nd = st_node[depth]
        if st_child[depth] < nodes[nd, N_COUNT]:
            c = children[nodes[nd, N_FIRST] + st_child[depth]]
            st_child[depth] += 1
            if ver < nodes[c, N_SINCE]:
                continue  # added after the sender's version: absent
            if nodes[c, N_KIND] == K_DATA:
                pre = nodes[c, N_DIM]
                if p + pre > fe:
                    return p, GROUP_OVERRUN
                n = _rd(buf, p + nodes[c, N_NUM_OFF], nodes[c, N_NUM_SZ], big)
                p += pre
                if n < 0 or p + n > fe:
                    return p, GROUP_OVERRUN
                k = counts[C_DATAS]
                if k >= d_node.shape[0]:
                    return p, -FULL_DATAS
                d_node[k] = c
                d_parent[k] = st_entry[depth]
                d_msg[k] = msg
                d_off[k] = p
                d_len[k] = n
                counts[C_DATAS] = k + 1
                p += n
                continue
            dim = nodes[c, N_DIM]
            if p + dim > fe:
                return p, GROUP_OVERRUN
            gbl = _rd(buf, p + nodes[c, N_BL_OFF], nodes[c, N_BL_SZ], big)
            n = _rd(buf, p + nodes[c, N_NUM_OFF], nodes[c, N_NUM_SZ], big)
            p += dim
            if n == 0:
                continue
            if gbl < min_bl[c, v]:
                return p, BLOCK_TOO_SMALL
            if n * max(gbl, 1) > fe - p + 65536:
                return p, GROUP_OVERRUN
            if nodes[c, N_FIXED] and p + gbl * n > fe:
                return p, GROUP_OVERRUN
            if depth + 1 >= st_node.shape[0]:
                return p, TOO_DEEP
            depth += 1
            st_node[depth] = c
            st_left[depth] = n
            st_bl[depth] = gbl
        elif depth == 0:
            return p, 0
        else:
            st_left[depth] -= 1
            if st_left[depth] <= 0:
                depth -= 1
                continue
        # start the next entry of the group at this depth
        c = st_node[depth]
        if p + st_bl[depth] > fe:
            return p, GROUP_OVERRUN
        k = counts[C_ENTRIES]
        if k >= e_node.shape[0]:
            return p, -FULL_ENTRIES
        e_node[k] = c
        e_parent[k] = st_entry[depth - 1]
        e_msg[k] = msg
        e_off[k] = p
        e_bl[k] = st_bl[depth]
        counts[C_ENTRIES] = k + 1
        st_entry[depth] = k
        st_child[depth] = 0
        p += st_bl[depth]


@numba.njit(**_NJIT)
def _error(counts, r_off, r_len, r_reason, r_detail, r_seg, off, length, reason, detail, seg):
    k = counts[C_ERRORS]
    if k >= r_off.shape[0]:
        counts[C_STATUS] = FULL_ERRORS
        return False
    r_off[k] = off
    r_len[k] = length
    r_reason[k] = reason
    r_detail[k] = detail
    r_seg[k] = seg
    counts[C_ERRORS] = k + 1
    return True


@numba.njit(inline="always", **_NJIT)
def _weak(buf, q, end, framing, hdr):
    """Like ``_plausible`` but the template may be unknown: a frame header and this schema's id."""
    length, pre = _frame(buf, q, end, framing, hdr, False)
    if length == -1 or (length > 0 and end - q < pre + hdr[H_SIZE]):
        return -1
    if length < 0:
        return 0
    _, _, sid, _ = _header(buf, q + pre, hdr)
    return 1 if sid == hdr[H_SCHEMA_ID] else 0


@numba.njit(inline="always", **_NJIT)
def _open(run, reason, start, detail, skip_to):
    run[R_REASON] = reason
    run[R_START] = start
    run[R_DETAIL] = detail
    run[R_SKIP] = skip_to


@numba.njit(inline="always", **_NJIT)
def _accept(counts, m_frame, m_hdr, m_end, m_slot, m_ver, m_bl, m_seg, pos, h, fe, slot, ver,
            bl, s):  # fmt: skip
    msg = counts[C_MSGS]
    m_frame[msg] = pos
    m_hdr[msg] = h
    m_end[msg] = fe
    m_slot[msg] = slot
    m_ver[msg] = ver
    m_bl[msg] = bl
    m_seg[msg] = s
    counts[C_MSGS] = msg + 1


@numba.njit(**_NJIT)
def _resync(buf, pos, end, framing, hdr, tid_slot, slot_root, nodes, min_bl, skip_to):
    """(q, found): the first ``q >= pos`` where a frame is plausible (found 1), where more bytes
    are needed to tell (found -1), or ``end`` (found 0). At ``skip_to`` (the end the bad frame
    declared) a frame of this schema with an unknown template counts too, so consecutive frames
    of unknown templates each become one dead letter."""
    q = pos
    while q < end:
        found = _plausible(buf, q, end, framing, hdr, tid_slot, slot_root, nodes, min_bl)
        if found == 0 and q == skip_to:
            found = _weak(buf, q, end, framing, hdr)
        if found != 0:
            return q, found
        q += 1
    return end, 0


@numba.njit(**_NJIT)
def _stream(buf, pos, end, s, can_wait, cut_reason, run, framing, hdr, tid_slot,  # noqa: C901
            slot_root, nodes, children, min_bl, m_frame, m_hdr, m_end, m_slot, m_ver, m_bl,
            m_seg, e_node, e_parent, e_msg, e_off, e_bl, d_node, d_parent, d_msg, d_off, d_len,
            r_off, r_len, r_reason, r_detail, r_seg, counts, stack):  # fmt: skip
    """Scan ``buf[pos:end]``, a piece of a byte stream; False when an output array is full.

    Every decision at a position depends only on the bytes from there to the end of what it
    needs (the framing header, the message header, the whole frame); when those bytes are not
    all here and ``can_wait``, the scan stops there (``counts[C_CONSUMED]``) and the next scan
    resumes at that position. So the messages and dead letters of a stream do not depend on how
    it was cut into pieces. Bytes that are not a frame form one *bad run*, from where the
    trouble started to the next plausible frame; a run still open when the scan stops is left
    in ``run`` for the next scan to continue (its start may then lie before ``buf``).
    """
    hsize = hdr[H_SIZE]
    schema_id = hdr[H_SCHEMA_ID]
    max_version = hdr[H_MAX_VERSION]
    n_tid = tid_slot.shape[0]
    fast = (framing == LENGTH2 and not hdr[H_BIG] and hsize == 8 and hdr[H_BL_OFF] == 0
            and hdr[H_TID_OFF] == 2 and hdr[H_SID_OFF] == 4 and hdr[H_VER_OFF] == 6
            and hdr[H_BL_SZ] == 2 and hdr[H_TID_SZ] == 2 and hdr[H_SID_SZ] == 2
            and hdr[H_VER_SZ] == 2)  # fmt: skip
    while True:
        if run[R_REASON] != 0:
            q, found = _resync(buf, pos, end, framing, hdr, tid_slot, slot_root, nodes, min_bl,
                               run[R_SKIP])  # fmt: skip
            if found == -1 and can_wait:
                counts[C_CONSUMED] = q  # the run goes on: the next scan continues it
                if 0 <= run[R_SKIP] < q:  # past the end its header declared: not a frame
                    _open(run, BAD_FRAME, run[R_START], 0, -1)
                return True
            if found != 1:
                q = end
            reason, detail = run[R_REASON], run[R_DETAIL]
            if run[R_SKIP] >= 0 and q != run[R_SKIP]:
                reason, detail = BAD_FRAME, 0  # not the frame its header said: not a frame
            if not _error(counts, r_off, r_len, r_reason, r_detail, r_seg, run[R_START],
                          q - run[R_START], reason, detail, s):  # fmt: skip
                return False
            run[R_REASON] = 0
            pos = q
        if pos >= end:
            counts[C_CONSUMED] = end
            return True
        if fast and end - pos >= 10:  # hftagg framing, standard little-endian header
            length = np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
            bl = np.int64(buf[pos + 2]) | (np.int64(buf[pos + 3]) << 8)
            tid = np.int64(buf[pos + 4]) | (np.int64(buf[pos + 5]) << 8)
            sid = np.int64(buf[pos + 6]) | (np.int64(buf[pos + 7]) << 8)
            ver = np.int64(buf[pos + 8]) | (np.int64(buf[pos + 9]) << 8)
            if length == 10 + bl and pos + length <= end and sid == schema_id and tid < n_tid:
                slot = tid_slot[tid]
                if slot >= 0:
                    root = slot_root[slot]
                    if (nodes[root, N_FIXED] and ver >= nodes[root, N_SINCE]
                            and bl >= min_bl[root, min(ver, max_version)]):  # fmt: skip
                        if counts[C_MSGS] >= m_frame.shape[0]:
                            counts[C_STATUS] = FULL_MSGS
                            return False
                        _accept(counts, m_frame, m_hdr, m_end, m_slot, m_ver, m_bl, m_seg, pos,
                                pos + 2, pos + length, slot, ver, bl, s)  # fmt: skip
                        pos += length
                        continue
        length, pre = _frame(buf, pos, end, framing, hdr, False)
        if length == -2:  # an impossible framing header
            _open(run, BAD_FRAME, pos, 0, -1)
            pos += 1
            continue
        if length == -1 or end - pos < pre + hsize:
            if can_wait:
                counts[C_CONSUMED] = pos
                return True
            _open(run, cut_reason, pos, end - pos, -1)
            pos += 1
            continue
        fe = pos + length
        h = pos + pre
        bl, tid, sid, ver = _header(buf, h, hdr)
        reason, detail, slot = _check_header(bl, tid, sid, ver, hdr, tid_slot, slot_root, nodes,
                                             min_bl)  # fmt: skip
        if reason != 0:  # resynchronise, but a frame of this schema may follow at fe
            _open(run, reason, pos, detail, fe)
            pos += 1
            continue
        root = slot_root[slot]
        p = h + hsize + bl
        if p > fe or (nodes[root, N_FIXED] and p != fe):  # length prefix vs message header
            _open(run, LENGTH_MISMATCH, pos, p - h, -1)
            pos += 1
            continue
        if fe > end:
            if can_wait:
                counts[C_CONSUMED] = pos
                return True
            _open(run, cut_reason, pos, length, -1)
            pos += 1
            continue
        if counts[C_MSGS] >= m_frame.shape[0]:
            counts[C_STATUS] = FULL_MSGS
            return False
        if not nodes[root, N_FIXED]:
            e0 = counts[C_ENTRIES]  # a rejected message must leave no entries behind
            d0 = counts[C_DATAS]
            p, reason = _walk(buf, p, fe, ver, root, nodes, children, min_bl, hdr[H_BIG],
                              max_version, counts[C_MSGS], e_node, e_parent, e_msg, e_off, e_bl,
                              d_node, d_parent, d_msg, d_off, d_len, counts, stack[0], stack[1],
                              stack[2], stack[3], stack[4])  # fmt: skip
            if reason < 0:
                counts[C_STATUS] = -reason
                return False
            if reason == 0 and p != fe:
                reason = LENGTH_MISMATCH
            if reason != 0:
                counts[C_ENTRIES] = e0
                counts[C_DATAS] = d0
                if reason == LENGTH_MISMATCH:  # the message ends before its frame does
                    _open(run, LENGTH_MISMATCH, pos, p - h, -1)
                    pos += 1
                    continue
                if not _error(counts, r_off, r_len, r_reason, r_detail, r_seg, pos, length,
                              reason, p - h, s):  # fmt: skip
                    return False
                pos = fe
                continue
        _accept(counts, m_frame, m_hdr, m_end, m_slot, m_ver, m_bl, m_seg, pos, h, fe, slot,
                ver, bl, s)  # fmt: skip
        pos = fe


@numba.njit(**_NJIT)
def _packet(buf, pos, end, s, hdr, tid_slot, slot_root, nodes, children, min_bl, m_frame,  # noqa: C901
            m_hdr, m_end, m_slot, m_ver, m_bl, m_seg, e_node, e_parent, e_msg, e_off, e_bl,
            d_node, d_parent, d_msg, d_off, d_len, r_off, r_len, r_reason, r_detail, r_seg,
            counts, stack):  # fmt: skip
    """Scan one CME MDP3 packet; False when an output array is full. A bad message size ends
    the packet (its bytes are one dead letter); a bad message is skipped by its size."""
    hsize = hdr[H_SIZE]
    if end - pos < MDP3_PACKET_HEADER:
        return _error(counts, r_off, r_len, r_reason, r_detail, r_seg, pos, end - pos,
                      TRUNCATED, end - pos, s)  # fmt: skip
    pos += MDP3_PACKET_HEADER
    while pos < end:
        length, pre = _frame(buf, pos, end, MDP3, hdr, True)
        if length < 0 or pos + length > end:
            reason = TRUNCATED
            if length == -2:
                reason = BAD_FRAME
            return _error(counts, r_off, r_len, r_reason, r_detail, r_seg, pos, end - pos,
                          reason, length, s)  # fmt: skip
        fe = pos + length
        h = pos + pre
        bl, tid, sid, ver = _header(buf, h, hdr)
        reason, detail, slot = _check_header(bl, tid, sid, ver, hdr, tid_slot, slot_root, nodes,
                                             min_bl)  # fmt: skip
        p = h + hsize + bl
        if reason == 0 and p > fe:
            reason, detail = TRUNCATED, bl
        if reason == 0 and counts[C_MSGS] >= m_frame.shape[0]:
            counts[C_STATUS] = FULL_MSGS
            return False
        e0 = counts[C_ENTRIES]  # a rejected message must leave no entries behind
        d0 = counts[C_DATAS]
        if reason == 0 and not nodes[slot_root[slot], N_FIXED]:
            p, reason = _walk(buf, p, fe, ver, slot_root[slot], nodes, children, min_bl,
                              hdr[H_BIG], hdr[H_MAX_VERSION], counts[C_MSGS], e_node, e_parent,
                              e_msg, e_off, e_bl, d_node, d_parent, d_msg, d_off, d_len, counts,
                              stack[0], stack[1], stack[2], stack[3], stack[4])  # fmt: skip
            if reason < 0:
                counts[C_STATUS] = -reason
                return False
            if reason != 0:
                detail = p - h
        if reason == 0 and p != fe:
            reason, detail = LENGTH_MISMATCH, p - h
        if reason != 0:
            counts[C_ENTRIES] = e0
            counts[C_DATAS] = d0
            if not _error(counts, r_off, r_len, r_reason, r_detail, r_seg, pos, length, reason,
                          detail, s):  # fmt: skip
                return False
        else:
            _accept(counts, m_frame, m_hdr, m_end, m_slot, m_ver, m_bl, m_seg, pos, h, fe, slot,
                    ver, bl, s)  # fmt: skip
        pos = fe
    return True


@numba.njit(**_NJIT)
def scan(buf, seg_start, seg_end, framing, final, cut_reason, run, hdr, tid_slot, slot_root,
         nodes, children, min_bl, m_frame, m_hdr, m_end, m_slot, m_ver, m_bl, m_seg,
         e_node, e_parent, e_msg, e_off, e_bl, d_node, d_parent, d_msg, d_off, d_len,
         r_off, r_len, r_reason, r_detail, r_seg, counts):  # fmt: skip
    """Find and check every message of every segment; fill the output arrays and ``counts``.

    A segment is one MDP3 packet (``framing == MDP3``), one datagram of frames, or a piece of a
    byte stream: then only the last segment, unless ``final``, may end inside a frame, which is
    left unconsumed (``counts[C_CONSUMED]``) together with any bad run still open (``run``, see
    ``_stream``; it also brings in the run a previous scan left open). Data cut off by the end
    of a segment is a dead letter with ``cut_reason``. ``counts[C_STATUS]`` is non-zero when an
    output array was too small; the caller grows it and scans again from its own copy of
    ``run``.
    """
    stack = np.empty((5, MAX_DEPTH), dtype=np.int64)
    counts[:] = 0
    last = seg_start.shape[0] - 1
    for s in range(seg_start.shape[0]):
        counts[C_CONSUMED] = seg_end[s]
        if framing == MDP3:
            ok = _packet(buf, seg_start[s], seg_end[s], s, hdr, tid_slot, slot_root, nodes,
                         children, min_bl, m_frame, m_hdr, m_end, m_slot, m_ver, m_bl, m_seg,
                         e_node, e_parent, e_msg, e_off, e_bl, d_node, d_parent, d_msg, d_off,
                         d_len, r_off, r_len, r_reason, r_detail, r_seg, counts, stack)  # fmt: skip
        else:
            can_wait = not final and s == last
            ok = _stream(buf, seg_start[s], seg_end[s], s, can_wait, cut_reason,
                         run, framing, hdr, tid_slot, slot_root, nodes, children, min_bl,
                         m_frame, m_hdr, m_end, m_slot, m_ver, m_bl, m_seg, e_node, e_parent,
                         e_msg, e_off, e_bl, d_node, d_parent, d_msg, d_off, d_len, r_off, r_len,
                         r_reason, r_detail, r_seg, counts, stack)  # fmt: skip
        if not ok:
            if counts[C_STATUS] == 0:
                counts[C_STATUS] = FULL_ERRORS
            return


@numba.njit(**_NJIT)
def gather_rows(buf, starts, lengths, null, out):
    """``out[i] = null`` then the first ``min(lengths[i], width)`` bytes from ``starts[i]``."""
    width = out.shape[1]
    flat = out.reshape(-1)
    for i in range(starts.shape[0]):
        s = np.uint64(starts[i])
        row = np.uint64(i * width)
        n = np.uint64(min(lengths[i], width))
        for b in range(n):
            flat[row + b] = buf[s + b]
        for b in range(n, np.uint64(width)):
            flat[row + b] = null[b]


@numba.njit(**_NJIT)
def scan_2d(buf, seg_start, seg_end, framing, final, cut_reason, run, hdr, tid_slot, slot_root,
            nodes, children, min_bl, m, e, d, r, counts):  # fmt: skip
    """``scan`` with its output columns as four 2-D arrays (rows: ``m`` 7, ``e`` 5, ``d`` 5,
    ``r`` 5): half the arguments, so the call from Python costs about half as much."""
    return scan(buf, seg_start, seg_end, framing, final, cut_reason, run, hdr, tid_slot,
                slot_root, nodes, children, min_bl, m[0], m[1], m[2], m[3], m[4], m[5], m[6],
                e[0], e[1], e[2], e[3], e[4], d[0], d[1], d[2], d[3], d[4], r[0], r[1], r[2],
                r[3], r[4], counts)  # fmt: skip


@numba.njit(**_NJIT)
def gather_records(buf, m_hdr, m_slot, m_bl, m_ver, n, hsize, slot_out, slot_block,
                   slot_since, op_lo, op_hi, ops, null_rows, out, out_base, out_size,
                   out_count):  # fmt: skip
    """Copy mapped fields of messages ``0..n`` into record rows, one output per template slot.

    ``ops[j] = (block offset, record offset, bytes, sinceVersion)``. A message whose block is
    shorter than the schema's, or whose version predates a mapped field, starts from the null
    row so the fields its sender did not have read as null.
    """
    for i in range(n):
        k = m_slot[i]
        o = slot_out[k]
        if o < 0:
            continue
        size = np.uint64(out_size[o])
        row = np.uint64(out_base[o] + out_count[o] * out_size[o])
        src = np.uint64(m_hdr[i] + hsize)
        bl = m_bl[i]
        ver = m_ver[i]
        partial = bl < slot_block[k] or ver < slot_since[k]
        if partial or slot_since[k] < 0:
            for b in range(size):
                out[row + b] = null_rows[o, b]
        for j in range(op_lo[k], op_hi[k]):
            s = ops[j, 0]
            c = ops[j, 2]
            if partial and (s + c > bl or ver < ops[j, 3]):
                continue
            so = src + np.uint64(s)
            do = row + np.uint64(ops[j, 1])
            for b in range(np.uint64(c)):
                out[do + b] = buf[so + b]
        out_count[o] += 1


@numba.njit(**_NJIT)
def compact_chunks(data, lengths, out):
    """Concatenate ``data[i, :lengths[i]]`` into ``out``; return the byte count."""
    p = np.uint64(0)
    for i in range(data.shape[0]):
        n = np.uint64(min(lengths[i], data.shape[1]))
        for b in range(n):
            out[p + b] = data[i, b]
        p += n
    return np.int64(p)
