"""The numba kernel that reads the table updates of a WriteRequest straight from its wire bytes.

`decode_updates` walks the serialized request once and, for every `updates` element that is an
ordinary table entry it fully understands, writes its values into flat arrays (one row per
update); `offload.target.wire` turns the rows into the same ops `EntityStore.prepare` builds.
It mirrors `offload.p4decode.FastTableDecoder.decode` and `EntityStore._prepare_fast`, and is
stricter than both: any update with something it does not handle (another entity, a default
entry, counter data, metadata, an unknown or repeated field, a wire type it does not expect, a
truncated or over-long value, any invalid value) gets ok = 0 and is prepared the usual way from
the parsed message, which reports errors the one way.

Everything the kernel reads is in this file (numba's on-disk cache is keyed on this file only):
the wire field numbers below are p4runtime.proto's, and the key kinds are this module's own.
"""

from __future__ import annotations

import numba
import numpy as np

# Key kinds (wire.py maps P4Info match kinds to these).
K_EXACT, K_LPM, K_TERNARY, K_RANGE, K_OPTIONAL = 0, 1, 2, 3, 4

# Columns of the table spec.
TB_ID, TB_NKEYS, TB_NEEDS_PRIO, TB_IDLE, TB_PACK, TB_NACTS = 0, 1, 2, 3, 4, 5
TB_COLS = 6
# Columns of a key spec: P4Info field id, kind, bit width, bit offset in the packed identity.
KY_ID, KY_KIND, KY_WIDTH, KY_OFFSET = 0, 1, 2, 3
# Columns of an action spec and a param spec.
AC_ID, AC_NPARAMS = 0, 1
PA_ID, PA_WIDTH = 0, 1

MAX_MATCHES = 64  # FieldMatch elements of one entry beyond this: the usual path
MAX_VALUE_BYTES = 16  # values are read into two 64-bit halves

_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)
_ZERO = np.uint64(0)
_ONE = np.uint64(1)
_INT31 = np.uint64(1 << 31)
_INT63 = np.uint64(1 << 63)


@numba.njit(nogil=True, cache=True)
def _varint(buf: np.ndarray, pos: int, end: int) -> tuple[np.uint64, int]:
    """A varint at buf[pos:end] and the position after it; position -1 if malformed."""
    value = _ZERO
    shift = 0
    while pos < end:
        b = buf[pos]
        pos += 1
        if shift == 63 and b > 1:
            return _ZERO, -1  # more than 64 bits
        value |= np.uint64(b & 0x7F) << np.uint64(shift)
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            return _ZERO, -1
    return _ZERO, -1


@numba.njit(nogil=True, cache=True)
def _span(buf: np.ndarray, pos: int, end: int) -> tuple[int, int]:
    """A length-delimited field's (start, end) at pos; start -1 if malformed."""
    n, pos = _varint(buf, pos, end)
    if pos < 0 or n > np.uint64(end - pos):
        return -1, -1
    return pos, pos + int(np.int64(n))


@numba.njit(nogil=True, cache=True)
def _low_mask(bits: int) -> tuple[np.uint64, np.uint64]:
    """The mask of the low `bits` bits of a 128-bit value, as (high half, low half)."""
    if bits <= 0:
        return _ZERO, _ZERO
    if bits >= 128:
        return _ALL, _ALL
    if bits > 64:
        return (_ONE << np.uint64(bits - 64)) - _ONE, _ALL
    if bits == 64:
        return _ZERO, _ALL
    return _ZERO, (_ONE << np.uint64(bits)) - _ONE


@numba.njit(nogil=True, cache=True)
def _value(buf: np.ndarray, start: int, end: int, width: int) -> tuple[bool, np.uint64, np.uint64]:
    """A big-endian value of 1..16 bytes that fits `width` bits: (ok, high half, low half)."""
    n = end - start
    if n < 1 or n > MAX_VALUE_BYTES:
        return False, _ZERO, _ZERO
    hi = _ZERO
    lo = _ZERO
    for p in range(start, end):
        hi = (hi << np.uint64(8)) | (lo >> np.uint64(56))
        lo = (lo << np.uint64(8)) | np.uint64(buf[p])
    mhi, mlo = _low_mask(width)
    if hi & ~mhi or lo & ~mlo:
        return False, _ZERO, _ZERO
    return True, hi, lo


@numba.njit(nogil=True, cache=True)
def _pack(words: np.ndarray, hi: np.uint64, lo: np.uint64, offset: int) -> None:
    """OR a 128-bit value into little-endian 64-bit words at a bit offset."""
    q = offset // 64
    s = np.uint64(offset % 64)
    nw = words.shape[0]
    if q < nw:
        words[q] |= lo << s
    if q + 1 < nw:
        words[q + 1] |= hi << s
        if s != _ZERO:
            words[q + 1] |= lo >> (np.uint64(64) - s)
    if s != _ZERO and q + 2 < nw:
        words[q + 2] |= hi >> (np.uint64(64) - s)


@numba.njit(nogil=True, cache=True)
def _match(
    buf: np.ndarray,
    start: int,
    end: int,
    u: int,
    t: int,
    keys: np.ndarray,
    nkeys: int,
    present: np.ndarray,
    kv: np.ndarray,
) -> bool:
    """One FieldMatch into row u; False for anything the usual path must look at."""
    field_id = np.int64(-1)
    kind = -1
    ks = -1
    ke = -1
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return False
        if tag == np.uint64(1 << 3 | 0):
            if field_id >= 0:
                return False
            v, pos = _varint(buf, pos, end)
            if pos < 0 or v >= np.uint64(1 << 32):
                return False
            field_id = np.int64(v)
            continue
        if tag & np.uint64(7) != np.uint64(2) or kind >= 0:
            return False
        number = np.int64(tag >> np.uint64(3))
        if number == 2:
            kind = K_EXACT
        elif number == 3:
            kind = K_TERNARY
        elif number == 4:
            kind = K_LPM
        elif number == 6:
            kind = K_RANGE
        elif number == 7:
            kind = K_OPTIONAL
        else:
            return False
        ks, ke = _span(buf, pos, end)
        if ks < 0:
            return False
        pos = ke
    if field_id < 0 or kind < 0:
        return False
    k = -1
    for j in range(nkeys):
        if keys[t, j, KY_ID] == field_id:
            k = j
            break
    if k < 0 or present[u, k] or keys[t, k, KY_KIND] != kind:
        return False
    width = keys[t, k, KY_WIDTH]
    # The kind's submessage: field 1 (bytes) and field 2 (bytes, or LPM's varint prefix_len).
    s1 = -1
    e1 = -1
    s2 = -1
    e2 = -1
    plen = np.uint64(0)
    seen2 = False
    pos = ks
    while pos < ke:
        tag, pos = _varint(buf, pos, ke)
        if pos < 0:
            return False
        if tag == np.uint64(1 << 3 | 2):
            if s1 >= 0:
                return False
            s1, e1 = _span(buf, pos, ke)
            if s1 < 0:
                return False
            pos = e1
        elif kind == K_LPM and tag == np.uint64(2 << 3 | 0):
            if seen2:
                return False
            plen, pos = _varint(buf, pos, ke)
            if pos < 0:
                return False
            seen2 = True
        elif (kind in (K_TERNARY, K_RANGE)) and tag == np.uint64(2 << 3 | 2):
            if seen2:
                return False
            s2, e2 = _span(buf, pos, ke)
            if s2 < 0:
                return False
            pos = e2
            seen2 = True
        else:
            return False
    if s1 < 0:
        return False
    ok, vhi, vlo = _value(buf, s1, e1, width)
    if not ok:
        return False
    whi = _ZERO
    wlo = _ZERO
    if kind in (K_TERNARY, K_RANGE):
        if not seen2:
            return False
        ok, whi, wlo = _value(buf, s2, e2, width)
        if not ok:
            return False
        if kind == K_TERNARY:
            if whi == _ZERO and wlo == _ZERO:
                return False  # an all-zero mask: omit the key instead
            if vhi & ~whi or vlo & ~wlo:
                return False  # value bits outside the mask
        else:
            if vhi > whi or (vhi == whi and vlo > wlo):
                return False  # low > high
            fhi, flo = _low_mask(width)
            if vhi == _ZERO and vlo == _ZERO and whi == fhi and wlo == flo:
                return False  # the full range: omit the key instead
    elif kind == K_LPM:
        if plen == _ZERO or plen > np.uint64(width):
            return False
        fhi, flo = _low_mask(width)
        hhi, hlo = _low_mask(width - np.int64(plen))
        mhi = fhi & ~hhi
        mlo = flo & ~hlo
        if vhi & ~mhi or vlo & ~mlo:
            return False  # bits set beyond the prefix
        whi = _ZERO
        wlo = plen
    present[u, k] = 1
    kv[u, k, 0] = vhi
    kv[u, k, 1] = vlo
    kv[u, k, 2] = whi
    kv[u, k, 3] = wlo
    return True


@numba.njit(nogil=True, cache=True)
def _action(
    buf: np.ndarray,
    start: int,
    end: int,
    u: int,
    t: int,
    tables: np.ndarray,
    acts: np.ndarray,
    aspec: np.ndarray,
    pspec: np.ndarray,
    pv: np.ndarray,
    pseen: np.ndarray,
) -> int:
    """A TableAction into row u: the action slot, or -1 for anything unusual."""
    # TableAction: only its `action` (field 1), once.
    pos = start
    tag, pos = _varint(buf, pos, end)
    if pos < 0 or tag != np.uint64(1 << 3 | 2):
        return -1
    s, e = _span(buf, pos, end)
    if s < 0 or e != end:
        return -1
    action_id = np.int64(-1)
    nparams_seen = 0
    pseen[:] = 0
    slot = -1
    # Action: action_id (1) once, params (4) repeated; params may come before the id, so
    # they are read in a second pass.
    pos = s
    while pos < e:
        tag, pos = _varint(buf, pos, e)
        if pos < 0:
            return -1
        if tag == np.uint64(1 << 3 | 0):
            if action_id >= 0:
                return -1
            v, pos = _varint(buf, pos, e)
            if pos < 0 or v >= np.uint64(1 << 32):
                return -1
            action_id = np.int64(v)
        elif tag == np.uint64(4 << 3 | 2):
            ps, pe = _span(buf, pos, e)
            if ps < 0:
                return -1
            pos = pe
        else:
            return -1
    if action_id <= 0:
        return -1
    for j in range(tables[t, TB_NACTS]):
        a = acts[t, j]
        if aspec[a, AC_ID] == action_id:
            slot = a
            break
    if slot < 0:
        return -1
    nparams = aspec[slot, AC_NPARAMS]
    pos = s
    while pos < e:
        tag, pos = _varint(buf, pos, e)
        if tag == np.uint64(1 << 3 | 0):
            _v, pos = _varint(buf, pos, e)
            continue
        ps, pe = _span(buf, pos, e)
        pos = pe
        param_id = np.int64(-1)
        vs = -1
        ve = -1
        q = ps
        while q < pe:
            ptag, q = _varint(buf, q, pe)
            if q < 0:
                return -1
            if ptag == np.uint64(2 << 3 | 0):
                if param_id >= 0:
                    return -1
                v, q = _varint(buf, q, pe)
                if q < 0 or v >= np.uint64(1 << 32):
                    return -1
                param_id = np.int64(v)
            elif ptag == np.uint64(3 << 3 | 2):
                if vs >= 0:
                    return -1
                vs, ve = _span(buf, q, pe)
                if vs < 0:
                    return -1
                q = ve
            else:
                return -1
        if param_id < 0 or vs < 0:
            return -1
        j = -1
        for i in range(nparams):
            if pspec[slot, i, PA_ID] == param_id:
                j = i
                break
        if j < 0 or pseen[j]:
            return -1
        ok, hi, lo = _value(buf, vs, ve, pspec[slot, j, PA_WIDTH])
        if not ok:
            return -1
        pseen[j] = 1
        nparams_seen += 1
        pv[u, j, 0] = hi
        pv[u, j, 1] = lo
    if nparams_seen != nparams:
        return -1
    return slot


@numba.njit(nogil=True, cache=True)
def _table_entry(
    buf: np.ndarray,
    start: int,
    end: int,
    u: int,
    utype: np.int64,
    tables: np.ndarray,
    keys: np.ndarray,
    acts: np.ndarray,
    aspec: np.ndarray,
    pspec: np.ndarray,
    out_t: np.ndarray,
    out_a: np.ndarray,
    prio: np.ndarray,
    idle: np.ndarray,
    present: np.ndarray,
    kv: np.ndarray,
    pv: np.ndarray,
    tw: np.ndarray,
    spans: np.ndarray,
    pseen: np.ndarray,
) -> bool:
    """One TableEntry into row u; False for anything the usual path must look at."""
    table_id = np.int64(-1)
    nmatch = 0
    as_ = -1
    ae = -1
    priority = np.uint64(0)
    timeout = np.uint64(0)
    seen_prio = False
    seen_idle = False
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return False
        if tag == np.uint64(1 << 3 | 0):
            if table_id >= 0:
                return False
            v, pos = _varint(buf, pos, end)
            if pos < 0 or v >= np.uint64(1 << 32):
                return False
            table_id = np.int64(v)
        elif tag == np.uint64(2 << 3 | 2):
            s, e = _span(buf, pos, end)
            if s < 0 or nmatch >= MAX_MATCHES:
                return False
            spans[nmatch, 0] = s
            spans[nmatch, 1] = e
            nmatch += 1
            pos = e
        elif tag == np.uint64(3 << 3 | 2):
            if as_ >= 0:
                return False
            as_, ae = _span(buf, pos, end)
            if as_ < 0:
                return False
            pos = ae
        elif tag == np.uint64(4 << 3 | 0):
            if seen_prio:
                return False
            priority, pos = _varint(buf, pos, end)
            if pos < 0:
                return False
            seen_prio = True
        elif tag == np.uint64(9 << 3 | 0):
            if seen_idle:
                return False
            timeout, pos = _varint(buf, pos, end)
            if pos < 0:
                return False
            seen_idle = True
        else:
            # controller_metadata, meters, counter_data, is_default_action, time since last
            # hit, metadata, is_const, unknown fields, unexpected wire types.
            return False
    if table_id < 0:
        return False
    t = -1
    for j in range(tables.shape[0]):
        if tables[j, TB_ID] == table_id:
            t = j
            break
    if t < 0:
        return False
    # int32 priority: negative values and anything wider than 31 bits go the usual way.
    if priority >= _INT31 or timeout >= _INT63:
        return False
    if tables[t, TB_NEEDS_PRIO]:
        if priority == _ZERO:
            return False
    elif priority != _ZERO:
        return False
    if timeout != _ZERO and not tables[t, TB_IDLE]:
        return False
    nkeys = tables[t, TB_NKEYS]
    for m in range(nmatch):
        if not _match(buf, spans[m, 0], spans[m, 1], u, t, keys, nkeys, present, kv):
            return False
    for k in range(nkeys):
        if keys[t, k, KY_KIND] == K_EXACT and not present[u, k]:
            return False
    slot = -1
    if as_ >= 0:
        slot = _action(buf, as_, ae, u, t, tables, acts, aspec, pspec, pv, pseen)
        if slot < 0:
            return False
    elif utype != 3:
        return False  # INSERT and MODIFY need an action: the usual path says so
    if tables[t, TB_PACK]:
        nw = tw.shape[2]
        for k in range(nkeys):
            kind = keys[t, k, KY_KIND]
            if kind == K_RANGE or not present[u, k]:
                continue
            width = keys[t, k, KY_WIDTH]
            offset = keys[t, k, KY_OFFSET]
            vhi = kv[u, k, 0]
            vlo = kv[u, k, 1]
            if kind == K_TERNARY:
                mhi = kv[u, k, 2]
                mlo = kv[u, k, 3]
            elif kind == K_LPM:
                fhi, flo = _low_mask(width)
                hhi, hlo = _low_mask(width - np.int64(kv[u, k, 3]))
                mhi = fhi & ~hhi
                mlo = flo & ~hlo
            else:
                mhi, mlo = _low_mask(width)
            if (offset + width + 63) // 64 > nw:
                return False
            _pack(tw[u, 0], vhi, vlo, offset)
            _pack(tw[u, 1], mhi, mlo, offset)
    out_t[u] = t
    out_a[u] = slot
    prio[u] = np.int64(priority)
    idle[u] = np.int64(timeout)
    return True


@numba.njit(nogil=True, cache=True)
def decode_updates(
    buf: np.ndarray,
    tables: np.ndarray,
    keys: np.ndarray,
    acts: np.ndarray,
    aspec: np.ndarray,
    pspec: np.ndarray,
    ok: np.ndarray,
    utypes: np.ndarray,
    out_t: np.ndarray,
    out_a: np.ndarray,
    prio: np.ndarray,
    idle: np.ndarray,
    present: np.ndarray,
    kv: np.ndarray,
    pv: np.ndarray,
    tw: np.ndarray,
) -> int:
    """Decode every update of a serialized WriteRequest into its row; the number of updates.

    Returns -1 if the request's own framing is not what it expects (then no row counts). Rows
    have ok[u] = 1 where the update was decoded completely; the others are left to the caller.
    """
    n = ok.shape[0]
    spans = np.empty((MAX_MATCHES, 2), np.int64)
    pseen = np.zeros(pspec.shape[1] + 1, np.uint8)
    end = buf.shape[0]
    pos = 0
    u = 0
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return -1
        wt = tag & np.uint64(7)
        if tag == np.uint64(4 << 3 | 2):
            us, ue = _span(buf, pos, end)
            if us < 0 or u >= n:
                return -1
            pos = ue
            # Update: type (1) once, entity (2) once, nothing else.
            utype = np.int64(-1)
            es = -1
            ee = -1
            good = True
            q = us
            while q < ue:
                utag, q = _varint(buf, q, ue)
                if q < 0:
                    good = False
                    break
                if utag == np.uint64(1 << 3 | 0) and utype < 0:
                    v, q = _varint(buf, q, ue)
                    if q < 0 or v > np.uint64(3):
                        good = False
                        break
                    utype = np.int64(v)
                elif utag == np.uint64(2 << 3 | 2) and es < 0:
                    es, ee = _span(buf, q, ue)
                    if es < 0:
                        good = False
                        break
                    q = ee
                else:
                    good = False
                    break
            if good and utype >= 1 and es >= 0:
                # Entity: only table_entry (2), once.
                etag, q = _varint(buf, es, ee)
                if q >= 0 and etag == np.uint64(2 << 3 | 2):
                    ts, te = _span(buf, q, ee)
                    if ts >= 0 and te == ee:
                        utypes[u] = utype
                        if _table_entry(
                            buf, ts, te, u, utype, tables, keys, acts, aspec, pspec, out_t,
                            out_a, prio, idle, present, kv, pv, tw, spans, pseen,
                        ):  # fmt: skip
                            ok[u] = 1
            u += 1
        elif wt == np.uint64(0):
            _v, pos = _varint(buf, pos, end)
            if pos < 0:
                return -1
        elif wt == np.uint64(2):
            _s, e = _span(buf, pos, end)
            if _s < 0:
                return -1
            pos = e
        elif wt == np.uint64(1):
            pos += 8
        elif wt == np.uint64(5):
            pos += 4
        else:
            return -1
    if pos != end:
        return -1
    return u


@numba.njit(nogil=True, cache=True)
def _long_tag_run(buf: np.ndarray, start: int, end: int) -> bool:
    """Whether buf[start:end] holds four 0x80 bytes in a row.

    A tag the decoders accept is below 128, so one spelled in more than five bytes (which upb
    refuses, and `_varint` reads) carries at least four such bytes; a value may too, and then
    the entry merely takes the usual path.
    """
    run = 0
    for p in range(start, end):
        if buf[p] == 0x80:
            run += 1
            if run == 4:
                return True
        else:
            run = 0
    return False


@numba.njit(nogil=True, cache=True)
def decode_entities(
    buf: np.ndarray,
    tables: np.ndarray,
    keys: np.ndarray,
    acts: np.ndarray,
    aspec: np.ndarray,
    pspec: np.ndarray,
    ok: np.ndarray,
    out_t: np.ndarray,
    out_a: np.ndarray,
    prio: np.ndarray,
    idle: np.ndarray,
    present: np.ndarray,
    kv: np.ndarray,
    pv: np.ndarray,
) -> int:
    """Decode every entity of a serialized ReadResponse into its row; the number of entities.

    Returns -1 if the response holds anything but `entities` (field 1) spelled plainly (then no
    row counts). Entities beyond the rows given are counted, not decoded (call once with no
    rows to size them). Rows have ok[u] = 1 where the entity is a table entry (and nothing
    else) decoded completely, as an INSERT of it would be; the others are left to the caller.
    """
    n = ok.shape[0]
    spans = np.empty((MAX_MATCHES, 2), np.int64)
    pseen = np.zeros(pspec.shape[1] + 1, np.uint8)
    tw = np.zeros((1, 2, 1), np.uint64)  # packed identities: not asked for (TB_PACK = 0)
    insert = np.int64(1)
    end = buf.shape[0]
    pos = 0
    u = 0
    while pos < end:
        if buf[pos] != 1 << 3 | 2:  # a tag other than `entities` in its one-byte spelling
            return -1
        es, ee = _span(buf, pos + 1, end)
        if es < 0:
            return -1
        pos = ee
        if u < n and ee - es >= 2 and buf[es] == 2 << 3 | 2:  # Entity: only table_entry
            ts, te = _span(buf, es + 1, ee)
            plain = ts >= 0 and te == ee and not _long_tag_run(buf, ts, te)
            if plain and _table_entry(
                buf, ts, te, u, insert, tables, keys, acts, aspec, pspec, out_t, out_a, prio,
                idle, present, kv, pv, tw, spans, pseen,
            ):  # fmt: skip
                ok[u] = 1
        u += 1
    return u
