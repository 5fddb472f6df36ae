"""numba mirror of the native kernels (the fallback when the C extension is missing).

Same algorithms and bit-identical results. numba has no 128-bit integers, so 64x64->128
products are assembled from 32-bit limbs. Source words at odd byte offsets are read
through a uint64 view of the byte slice: plain unaligned loads, which x86-64 and AArch64
allow (assembling words byte by byte was 4-5x slower). A ciphertext split over several
segments (sum_segmented) is first gathered into one scratch ciphertext. Every constant
is a np.uint64: mixing uint64 with a signed int makes numba compute in float64.
Arguments arrive validated and reshaped by :mod:`he_agg.hazmat.kernels`.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from . import tables

_U = np.uint64
_Z, _ONE, _32 = _U(0), _U(1), _U(32)
_M32 = _U(0xFFFFFFFF)
_SUM_SENTINEL = -1

_jit = njit(cache=True, nogil=True)
_inline = njit(cache=True, nogil=True, inline="always")


# -- 64-bit helpers ----------------------------------------------------------------------------


@_inline
def _mulhi(a, b):  # type: ignore[no-untyped-def]
    """High word of the 128-bit product a * b (32-bit limbs)."""
    a0, a1 = a & _M32, a >> _32
    b0, b1 = b & _M32, b >> _32
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> _32) + (p01 & _M32) + (p10 & _M32)
    return p11 + (p01 >> _32) + (p10 >> _32) + (mid >> _32)


@_inline
def _cond_sub(x, q):  # type: ignore[no-untyped-def]
    return x - q if x >= q else x


@_inline
def _sub_mod(a, b, q):  # type: ignore[no-untyped-def]
    return a - b if a >= b else a + q - b


@_inline
def _mul_mod(a, b, q, mu, k):  # type: ignore[no-untyped-def]
    """a * b mod q for a, b < q: classic Barrett, the same steps as heagg_mul_mod."""
    lo, hi = a * b, _mulhi(a, b)
    t = (hi << (_U(65) - k)) | (lo >> (k - _ONE))  # z >> (k - 1)
    plo, phi = t * mu, _mulhi(t, mu)
    qh = (phi << (_U(63) - k)) | (plo >> (k + _ONE))  # (t * mu) >> (k + 1)
    r = lo - qh * q  # in [0, 3q)
    return _cond_sub(_cond_sub(r, q + q), q)


@_inline
def _reduce64(x, q, m64):  # type: ignore[no-untyped-def]
    return _cond_sub(x - _mulhi(x, m64) * q, q)


@_inline
def _shoup_lazy(x, w, wp, q):  # type: ignore[no-untyped-def]
    """w * x mod q in [0, 2q) for any x (Shoup/Harvey)."""
    return w * x - _mulhi(wp, x) * q


# -- sum -----------------------------------------------------------------------------------------


@_jit
def _first_bad_acc(acc, qs, n):  # type: ignore[no-untyped-def]
    """Flat index of the first acc word (count, rows * n) not below its prime, or -1."""
    count, ct_words = acc.shape
    nmod = qs.shape[0]
    for c in range(count):
        for row in range(ct_words // n):
            q = qs[row % nmod]
            for i in range(n):
                if acc[c, row * n + i] >= q:
                    return c * ct_words + row * n + i
    return _SUM_SENTINEL


@_jit
def _add_words(acc_c, words, qs, n):  # type: ignore[no-untyped-def]
    """acc_c += words mod q for one ciphertext, one row (prime) of n words at a time:
    validate the row, then add it. On a bad word undo the earlier rows and return the
    word's index, else -1."""
    nmod = qs.shape[0]
    for row in range(acc_c.shape[0] // n):
        q = qs[row % nmod]
        lo = row * n
        bad = False
        for i in range(lo, lo + n):
            bad |= words[i] >= q
        if bad:
            _sub_words(acc_c, words, qs, n, lo)
            for i in range(lo, lo + n):
                if words[i] >= q:
                    return i
        for i in range(lo, lo + n):
            acc_c[i] = _cond_sub(acc_c[i] + words[i], q)
    return _SUM_SENTINEL


@_jit
def _sub_words(acc_c, words, qs, n, limit):  # type: ignore[no-untyped-def]
    """acc_c -= the first `limit` (a multiple of n, validated) words mod q."""
    nmod = qs.shape[0]
    for row in range(limit // n):
        q = qs[row % nmod]
        for i in range(row * n, row * n + n):
            acc_c[i] = _sub_mod(acc_c[i], words[i], q)


@_jit
def _apply(acc_c, words, qs, n, undo):  # type: ignore[no-untyped-def]
    """_add_words, or (undo) subtract every word."""
    if undo:
        _sub_words(acc_c, words, qs, n, acc_c.shape[0])
        return _SUM_SENTINEL
    return _add_words(acc_c, words, qs, n)


@_jit
def _gather(buf, segs, out):  # type: ignore[no-untyped-def]
    """Concatenate the byte segments (offset, length) of one ciphertext into out."""
    pos = np.int64(0)
    for k in range(segs.shape[0]):
        off, length = np.int64(segs[k, 0]), np.int64(segs[k, 1])
        whole = length - length % 8  # copied as unaligned words: 2.3x faster than a slice copy
        dst = out[pos : pos + whole].view(np.uint64)
        src = buf[off : off + whole].view(np.uint64)
        for j in range(whole // 8):
            dst[j] = src[j]
        for j in range(whole, length):
            out[pos + j] = buf[off + j]
        pos += length


@_jit
def _source(acc, buf, segs, qs, n, scratch, ncts, undo):  # type: ignore[no-untyped-def]
    """acc += (undo: acc -=) the first `ncts` ciphertexts of one source mod q. Words are
    read in place when one segment holds the whole ciphertext, else gathered into
    scratch. Adding stops at the first bad word: that ciphertext is left unchanged and
    the word's flat index returned (the caller undoes the earlier ones); else -1."""
    ct_words = acc.shape[1]
    ct_bytes = 8 * ct_words
    for c in range(ncts):
        whole = np.int64(-1)
        for k in range(segs.shape[1]):
            if np.int64(segs[c, k, 1]) == ct_bytes:
                whole = np.int64(segs[c, k, 0])
        if whole >= 0:  # unaligned: plain loads
            bad = _apply(acc[c], buf[whole : whole + ct_bytes].view(np.uint64), qs, n, undo)
        else:
            _gather(buf, segs[c], scratch)
            bad = _apply(acc[c], scratch.view(np.uint64), qs, n, undo)
        if bad >= 0:
            return c * ct_words + bad
    return _SUM_SENTINEL


def sum_segmented(
    acc: np.ndarray, bufs: list[np.ndarray], segments: np.ndarray, moduli: tuple[int, ...]
) -> tuple[int, int] | None:
    """acc += sum of the sources mod q; on a bad word return (source, flat word), acc restored.

    segments: (nsrc, count, nseg, 2) uint64, (byte offset, byte length) of each segment.
    """
    count, polys, nmod, n = acc.shape
    flat = acc.reshape(count, polys * nmod * n)
    qs = tables.moduli_array(moduli)
    bad = _first_bad_acc(flat, qs, n)
    if bad >= 0:
        return len(bufs), int(bad)
    scratch = np.empty(flat[0].nbytes, dtype=np.uint8)
    for s, (buf, segs) in enumerate(zip(bufs, segments)):
        bad = _source(flat, buf, segs, qs, n, scratch, count, False)
        if bad >= 0:
            _source(flat, buf, segs, qs, n, scratch, int(bad) // flat.shape[1], True)
            for prev in range(s - 1, -1, -1):
                _source(flat, bufs[prev], segments[prev], qs, n, scratch, count, True)
            return s, int(bad)
    return None


def sum_ciphertexts(
    acc: np.ndarray, bufs: list[np.ndarray], offsets: np.ndarray, moduli: tuple[int, ...]
) -> tuple[int, int] | None:
    """The contiguous case: each ciphertext is one segment."""
    ct_bytes = acc[0].nbytes if acc.shape[0] else 0
    segments = np.stack([offsets, np.full_like(offsets, ct_bytes)], axis=-1)[:, :, None, :]
    return sum_segmented(acc, bufs, np.ascontiguousarray(segments), moduli)


# -- packed residues ---------------------------------------------------------------------------


@_inline
def _packed_get(w, base, i, b):  # type: ignore[no-untyped-def]
    """Residue i of the packed row starting at word `base` of w: b bits at bit i*b."""
    p = i * b
    k = base + (p >> 6)
    sh = p & 63
    v = w[k] >> _U(sh)
    if sh + b > 64:
        v |= w[k + 1] << _U(64 - sh)
    return v & ((_ONE << _U(b)) - _ONE)


@_inline
def _bitlen(q):  # type: ignore[no-untyped-def]
    b = 0
    while q >> _U(b):
        b += 1
    return b


@_jit
def _packed_sub_rows(acc_c, w, qs, n, prow, pwords, rows):  # type: ignore[no-untyped-def]
    """acc_c -= the first `rows` (validated) packed rows of one ciphertext mod q."""
    nmod = qs.shape[0]
    for row in range(rows):
        q = qs[row % nmod]
        b = _bitlen(q)
        base = (row // nmod) * pwords + prow[row % nmod]
        for i in range(n):
            acc_c[row * n + i] = _sub_mod(acc_c[row * n + i], _packed_get(w, base, i, b), q)


@_jit
def _packed_rows(acc_c, w, qs, n, prow, pwords, rows, undo):  # type: ignore[no-untyped-def]
    """acc_c += (undo: -=) the first `rows` packed rows of one ciphertext mod q, row by row
    (validate a row, then add it). On a bad word undo the earlier rows and return its
    index, else -1."""
    if undo:
        _packed_sub_rows(acc_c, w, qs, n, prow, pwords, rows)
        return _SUM_SENTINEL
    nmod = qs.shape[0]
    for row in range(rows):
        q = qs[row % nmod]
        b = _bitlen(q)
        base = (row // nmod) * pwords + prow[row % nmod]
        lo = row * n
        for i in range(n):
            if _packed_get(w, base, i, b) >= q:
                _packed_sub_rows(acc_c, w, qs, n, prow, pwords, row)
                return lo + i
        for i in range(n):
            acc_c[lo + i] = _cond_sub(acc_c[lo + i] + _packed_get(w, base, i, b), q)
    return _SUM_SENTINEL


@_jit
def _packed_source(acc, buf, offs, qs, n, prow, pwords, ncts, undo):  # type: ignore[no-untyped-def]
    """acc += (undo: -=) the first `ncts` packed ciphertexts of one source; stops at the
    first bad word (that ciphertext unchanged) and returns its flat index, else -1."""
    ct_words = acc.shape[1]
    ct_bytes = 8 * pwords * (ct_words // (n * qs.shape[0]))
    rows = ct_words // n
    for c in range(ncts):
        off = np.int64(offs[c])
        w = buf[off : off + ct_bytes].view(np.uint64)
        bad = _packed_rows(acc[c], w, qs, n, prow, pwords, rows, undo)
        if bad >= 0:
            return c * ct_words + bad
    return _SUM_SENTINEL


def _packed_layout(n: int, moduli: tuple[int, ...]) -> tuple[np.ndarray, int]:
    words = [-(-n * q.bit_length() // 64) for q in moduli]
    return np.array([sum(words[:l]) for l in range(len(words))], dtype=np.int64), sum(words)


def sum_packed(
    acc: np.ndarray, bufs: list[np.ndarray], offsets: np.ndarray, moduli: tuple[int, ...]
) -> tuple[int, int] | None:
    """As sum_ciphertexts for packed sources: residues unpacked inside the adding loop."""
    count, polys, nmod, n = acc.shape
    flat = acc.reshape(count, polys * nmod * n)
    qs = tables.moduli_array(moduli)
    prow, pwords = _packed_layout(n, moduli)
    bad = _first_bad_acc(flat, qs, n)
    if bad >= 0:
        return len(bufs), int(bad)
    for s, (buf, offs) in enumerate(zip(bufs, offsets)):
        bad = _packed_source(flat, buf, offs, qs, n, prow, pwords, count, False)
        if bad >= 0:
            _packed_source(flat, buf, offs, qs, n, prow, pwords, int(bad) // flat.shape[1], True)
            for prev in range(s - 1, -1, -1):
                _packed_source(flat, bufs[prev], offsets[prev], qs, n, prow, pwords, count, True)
            return s, int(bad)
    return None


@_jit
def _unpack(out, w, qs, n, prow, pwords):  # type: ignore[no-untyped-def]
    nmod = qs.shape[0]
    for r in range(out.shape[0]):
        for l in range(nmod):
            b = _bitlen(qs[l])
            base = r * pwords + prow[l]
            for i in range(n):
                out[r, l, i] = _packed_get(w, base, i, b)


def unpack_residues(out: np.ndarray, src: np.ndarray, moduli: tuple[int, ...]) -> None:
    rows, nmod, n = out.shape
    prow, pwords = _packed_layout(n, moduli)
    _unpack(out, src.view(np.uint64), tables.moduli_array(moduli), n, prow, pwords)


# -- NTT ------------------------------------------------------------------------------------------


@_jit
def _forward(data, qs, tabs):  # type: ignore[no-untyped-def]
    rows, nmod, n = data.shape
    for r in range(rows):
        for l in range(nmod):
            x = data[r, l]
            q = qs[l]
            two_q = q + q
            w, wp = tabs[l, 0], tabs[l, 1]
            m, gap = 1, n >> 1
            while m < n:
                for i in range(m):
                    wi, wpi = w[m + i], wp[m + i]
                    base = 2 * i * gap
                    for j in range(base, base + gap):
                        tx = _cond_sub(x[j], two_q)
                        t = _shoup_lazy(x[j + gap], wi, wpi, q)
                        x[j] = tx + t
                        x[j + gap] = tx - t + two_q
                m <<= 1
                gap >>= 1
            for j in range(n):
                x[j] = _cond_sub(_cond_sub(x[j], two_q), q)


@_jit
def _inverse(data, qs, tabs):  # type: ignore[no-untyped-def]
    rows, nmod, n = data.shape
    for r in range(rows):
        for l in range(nmod):
            x = data[r, l]
            q = qs[l]
            two_q = q + q
            iw, iwp = tabs[l, 2], tabs[l, 3]
            m, gap = n >> 1, 1
            while m > 1:
                for i in range(m):
                    wi, wpi = iw[m + i], iwp[m + i]
                    base = 2 * i * gap
                    for j in range(base, base + gap):
                        tx, ty = x[j], x[j + gap]
                        x[j] = _cond_sub(tx + ty, two_q)
                        x[j + gap] = _shoup_lazy(tx - ty + two_q, wi, wpi, q)
                m >>= 1
                gap <<= 1
            s, sp = tabs[l, 4], tabs[l, 5]
            for j in range(gap):
                tx, ty = x[j], x[j + gap]
                x[j] = _cond_sub(_shoup_lazy(tx + ty, s[0], sp[0], q), q)
                x[j + gap] = _cond_sub(_shoup_lazy(tx - ty + two_q, s[1], sp[1], q), q)


def ntt_forward(data: np.ndarray, moduli: tuple[int, ...]) -> None:
    _forward(data, tables.moduli_array(moduli), tables.ntt_tables(moduli, data.shape[-1]))


def ntt_inverse(data: np.ndarray, moduli: tuple[int, ...]) -> None:
    _inverse(data, tables.moduli_array(moduli), tables.ntt_tables(moduli, data.shape[-1]))


# -- pointwise --------------------------------------------------------------------------------------


@_jit
def _mul(out, a, b, qs, mus, ks):  # type: ignore[no-untyped-def]
    rows, nmod, n = a.shape
    bb = b.shape[0] > 1
    for r in range(rows):
        rb = r if bb else 0
        for l in range(nmod):
            q, mu, k = qs[l], mus[l], ks[l]
            for i in range(n):
                out[r, l, i] = _mul_mod(a[r, l, i], b[rb, l, i], q, mu, k)


@_jit
def _muladd(out, a, b, c, qs, mus, ks):  # type: ignore[no-untyped-def]
    rows, nmod, n = a.shape
    bb, cb = b.shape[0] > 1, c.shape[0] > 1
    for r in range(rows):
        rb = r if bb else 0
        rc = r if cb else 0
        for l in range(nmod):
            q, mu, k = qs[l], mus[l], ks[l]
            for i in range(n):
                p = _mul_mod(a[r, l, i], b[rb, l, i], q, mu, k)
                out[r, l, i] = _cond_sub(p + c[rc, l, i], q)


@_jit
def _add(out, a, b, qs):  # type: ignore[no-untyped-def]
    rows, nmod, n = a.shape
    bb = b.shape[0] > 1
    for r in range(rows):
        rb = r if bb else 0
        for l in range(nmod):
            q = qs[l]
            for i in range(n):
                out[r, l, i] = _cond_sub(a[r, l, i] + b[rb, l, i], q)


@_jit
def _sub(out, a, b, qs):  # type: ignore[no-untyped-def]
    rows, nmod, n = a.shape
    bb = b.shape[0] > 1
    for r in range(rows):
        rb = r if bb else 0
        for l in range(nmod):
            q = qs[l]
            for i in range(n):
                out[r, l, i] = _sub_mod(a[r, l, i], b[rb, l, i], q)


@_jit
def _mul_scalar(out, a, scalars, shoups, qs):  # type: ignore[no-untyped-def]
    rows, nmod, n = a.shape
    for r in range(rows):
        for l in range(nmod):
            q, s, sp = qs[l], scalars[l], shoups[l]
            for i in range(n):
                out[r, l, i] = _cond_sub(_shoup_lazy(a[r, l, i], s, sp, q), q)


def mul(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: tuple[int, ...]) -> None:
    mus, ks, _ = tables.barrett_constants(moduli)
    _mul(out, a, b, tables.moduli_array(moduli), mus, ks)


def muladd(
    out: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, moduli: tuple[int, ...]
) -> None:
    mus, ks, _ = tables.barrett_constants(moduli)
    _muladd(out, a, b, c, tables.moduli_array(moduli), mus, ks)


def add(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: tuple[int, ...]) -> None:
    _add(out, a, b, tables.moduli_array(moduli))


def sub(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: tuple[int, ...]) -> None:
    _sub(out, a, b, tables.moduli_array(moduli))


def mul_scalar(
    out: np.ndarray, a: np.ndarray, scalars: np.ndarray, moduli: tuple[int, ...]
) -> None:
    shoups = np.array([(int(s) << 64) // q for s, q in zip(scalars.tolist(), moduli)], dtype=_U)
    _mul_scalar(out, a, scalars, shoups, tables.moduli_array(moduli))


@_jit
def _signed_to_rns(out, values, qs, m64s):  # type: ignore[no-untyped-def]
    rows, nmod, n = out.shape
    for r in range(rows):
        for l in range(nmod):
            q = qs[l]
            top = _Z
            for i in range(n):  # |v| < q: v + (q & sign mask); below q exactly then
                v = values[r, i]
                x = np.uint64(v) + (q & np.uint64(v >> np.int64(63)))
                out[r, l, i] = x
                top = max(top, x)
            if top >= q:  # exactly: v mod 2^64 reduced, minus 2^64 mod q where v < 0
                wrap = _reduce64(~_Z, q, m64s[l]) + _ONE
                for i in range(n):
                    v = values[r, i]
                    negative = np.uint64(v >> np.int64(63))
                    out[r, l, i] = _sub_mod(_reduce64(np.uint64(v), q, m64s[l]), wrap & negative, q)


def signed_to_rns(out: np.ndarray, values: np.ndarray, moduli: tuple[int, ...]) -> None:
    _, _, m64s = tables.barrett_constants(moduli)
    _signed_to_rns(out, values, tables.moduli_array(moduli), m64s)


# -- exact discrete Gaussian (docs/SAMPLER.md) ---------------------------------------------------------
# The steps of the Python reference with 128-bit values as (hi, lo) uint64 pairs; written
# without branches on the values (comparisons become 0/1 words and masks, table entries
# are picked by masks over the whole table). 64x64 -> 128-bit products use LLVM's i128
# multiply (one mul/mulx instruction), not the 32-bit limbs of _mulhi.

_M32_ = _U(0xFFFFFFFF)
_M63 = _U(0x7FFFFFFFFFFFFFFF)


@intrinsic
def _mul64(typingctx, a, b):  # type: ignore[no-untyped-def]
    """The 128-bit product a·b of two uint64 as (hi, lo)."""
    sig = types.UniTuple(types.uint64, 2)(types.uint64, types.uint64)

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        wide = ir.IntType(128)
        p = builder.mul(builder.zext(args[0], wide), builder.zext(args[1], wide))
        lo = builder.trunc(p, ir.IntType(64))
        hi = builder.trunc(builder.lshr(p, ir.Constant(wide, 64)), ir.IntType(64))
        return context.make_tuple(builder, signature.return_type, [hi, lo])

    return sig, codegen


@_inline
def _add128(ah, al, bh, bl):  # type: ignore[no-untyped-def]
    lo = al + bl
    return ah + bh + _U(lo < al), lo


@_inline
def _sub128(ah, al, bh, bl):  # type: ignore[no-untyped-def]
    return ah - bh - _U(al < bl), al - bl


@_inline
def _dg_mul_hi(ah, al, bh, bl):  # type: ignore[no-untyped-def]
    """a1·b1 + ((a1·b0 + a0·b1) >> 64) (the reference's _mul_hi), as (hi, lo)."""
    ph, pl = _mul64(ah, bh)
    xh, xl = _mul64(ah, bl)
    yh, yl = _mul64(al, bh)
    sh, _ = _add128(xh, xl, yh, yl)
    return _add128(ph, pl, _Z, sh)


@_inline
def _dg_select(tab_hi, tab_lo, t, index):  # type: ignore[no-untyped-def]
    """Entry `index` of table t, every entry read and masked (a loop LLVM vectorizes)."""
    hi, lo = _Z, _Z
    for i in range(tab_hi.shape[1]):
        m = _Z - _U(index == _U(i))
        hi |= tab_hi[t, i] & m
        lo |= tab_lo[t, i] & m
    return hi, lo


@_jit
def _dgauss(high, low, words, plan, rows, ntables, table_bits, poly, poly_wide):  # type: ignore[no-untyped-def]
    count, nwords = high.shape[0], words.shape[0]
    b, kappa = plan[0], plan[1]
    radix = 1 << table_bits
    tables = 2 + 2 * rows
    wide = tables + 2 * ntables * radix
    narrow = wide + 2 * poly_wide
    nnarrow = poly + 1 - poly_wide
    # the plan's rows and tables as contiguous arrays (unit-stride loops vectorize)
    row_hi, row_lo = plan[2:tables:2].copy(), plan[3:tables:2].copy()
    tab_hi = plan[tables:wide:2].copy().reshape(ntables, radix)
    tab_lo = plan[tables + 1 : wide : 2].copy().reshape(ntables, radix)
    p, i = 0, 0
    while p < count and nwords - i >= 4:
        w0, w1, w2, w3 = words[i], words[i + 1], words[i + 2], words[i + 3]
        i += 4
        sign = w0 >> _U(63)
        y = (w0 & _M63) >> (_U(63) - b)
        r1l = w3 >> _32
        x = _Z
        for r in range(rows):  # r1 < row <=> w1 < th + [r1l < tl] (th + 1 never wraps)
            x += _U(w1 < row_hi[r] + _U(r1l < row_lo[r]))
        zh, zl = (x >> _ONE) >> (_U(63) - b), (x << b) | y
        # h = κ·u(u + 2x) in 2^-96 units: n its integer part, g its fraction (gh < 2^32)
        u = (y << _ONE) << (_U(63) - b)
        ph, pl = _mul64(x + x, u)
        sh, sl = _mul64(u, u)
        qh, ql = _add128((ph << _32) | (pl >> _32), pl << _32, sh >> _32, (sh << _32) | (sl >> _32))
        hh, hl = _mul64(kappa, qh)
        hh, hl = _add128(hh, hl, _Z, _mul64(kappa, ql)[0])
        n = hh >> _32
        gh, gl = hh & _M32_, hl
        # the tables for g's top bits: Q127, then products in Q126, Q125
        shift = _U(32 - table_bits)
        eh, el = _dg_select(tab_hi, tab_lo, 0, gh >> shift)
        for t in range(1, ntables):
            shift -= _U(table_bits)
            th2, tl2 = _dg_select(tab_hi, tab_lo, t, (gh >> shift) & _U(radix - 1))
            eh, el = _dg_mul_hi(eh, el, th2, tl2)
        # the polynomial for the rest r = rest / 2^96 (rest < 2^84)
        resth = gh & ((_ONE << shift) - _ONE)
        r64 = (resth << _U(44)) | (gl >> _U(20))
        q = plan[narrow + nnarrow - 1]
        for k in range(nnarrow - 2, -1, -1):
            q = plan[narrow + k] - (_mul64(r64, q)[0] >> _U(12))
        s1, s0 = (resth << _32) | (gl >> _32), gl << _32
        th2, tl2 = _mul64(s1, q)
        th2, tl2 = _add128(th2, tl2, _Z, _mul64(s0, q)[0])
        polyh, polyl = _sub128(plan[wide + 2 * poly_wide - 2], plan[wide + 2 * poly_wide - 1],
                               th2 >> _ONE, (tl2 >> _ONE) | (th2 << _U(63)))
        for k in range(poly_wide - 2, -1, -1):
            th2, tl2 = _dg_mul_hi(s1, s0, polyh, polyl)
            polyh, polyl = _sub128(plan[wide + 2 * k], plan[wide + 2 * k + 1], th2, tl2)
        Ah, Al = _dg_mul_hi(eh, el, polyh, polyl)  # Q124
        sh2 = _U(28) + n
        Ah, Al = Ah >> sh2, (Al >> sh2) | (Ah << (_U(64) - sh2))
        r2h, r2l = w2 >> _32, (w2 << _32) | (w3 & _M32_)  # r2 as a (hi, lo) pair
        below = _U(r2h < Ah) | (_U(r2h == Ah) & _U(r2l < Al))
        zero = _U((zh | zl) == _Z)
        accept = below & ~(zero & sign) & _ONE
        m = _Z - sign
        vl = (zl ^ m) + sign
        vh = (zh ^ m) + _U(vl < sign)
        high[p] = np.int64((vh << _32) | (vl >> _32))
        low[p] = np.int64(vl & _M32_)
        p += np.int64(accept)
    return p, i


def discrete_gaussian(high: np.ndarray, low: np.ndarray, words: np.ndarray, plan: np.ndarray) -> tuple[int, int]:
    from . import DG_POLY, DG_POLY_WIDE, DG_ROWS, DG_TABLE_BITS, DG_TABLES

    produced, consumed = _dgauss(high, low, words, plan, DG_ROWS, DG_TABLES, DG_TABLE_BITS, DG_POLY, DG_POLY_WIDE)
    return int(produced), int(consumed)


# -- CRT ----------------------------------------------------------------------------------------------


@_jit
def _crt(out, data, qs, crt, radix, mus, ks, m64s):  # type: ignore[no-untyped-def]
    rows, nmod, n = data.shape
    y = np.empty(nmod, dtype=np.uint64)
    for r in range(rows):
        for i in range(n):
            for l in range(nmod):
                q, mu, k = qs[l], mus[l], ks[l]
                s = _Z
                for j in range(l):
                    yj = _reduce64(y[j], q, m64s[l])
                    s = _cond_sub(s + _mul_mod(yj, crt[l, j], q, mu, k), q)
                y[l] = _mul_mod(_sub_mod(data[r, l, i], s, q), crt[l, l], q, mu, k)
            negative = False
            for l in range(nmod - 1, -1, -1):
                h = (qs[l] - _ONE) >> _ONE
                if y[l] != h:
                    negative = y[l] > h
                    break
            acc = 0.0
            for l in range(nmod - 1, -1, -1):
                d = np.int64(y[l])
                if negative:
                    d -= np.int64(qs[0]) if l == 0 else np.int64(qs[l] - _ONE)
                acc = acc + np.float64(d) * radix[l]
            out[r, i] = acc


def crt_to_double(
    out: np.ndarray, data: np.ndarray, moduli: tuple[int, ...], radix: np.ndarray
) -> None:
    mus, ks, m64s = tables.barrett_constants(moduli)
    crt = tables.crt_tables(moduli)
    _crt(out, data, tables.moduli_array(moduli), crt, radix, mus, ks, m64s)
