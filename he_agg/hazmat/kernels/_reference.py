"""Plain-numpy reference kernels: the truth the tests hold the fast backends to.

Arithmetic is exact (Python ints in object arrays, or uint64 where nothing can wrap);
speed is secondary. Arguments arrive validated and reshaped by
:mod:`he_agg.hazmat.kernels` (residue arrays are C-contiguous (rows, nmod, n)).
"""

from __future__ import annotations

import numpy as np

from . import tables

_U64 = np.dtype("<u8")


def _objects(x: np.ndarray) -> np.ndarray:
    """uint64 array -> object array of Python ints (same shape)."""
    return np.array(x.tolist(), dtype=object).reshape(x.shape)


def _store(out: np.ndarray, values: np.ndarray) -> None:
    out[...] = np.array(values.tolist(), dtype=np.uint64).reshape(out.shape)


def _qcol(moduli: tuple[int, ...]) -> np.ndarray:
    """Moduli as an object array of shape (nmod, 1), broadcasting over (rows, nmod, n)."""
    return np.array(moduli, dtype=object).reshape(-1, 1)


# -- sum -------------------------------------------------------------------------------------


def _first_bad(words: np.ndarray, q: np.ndarray) -> int | None:
    bad = np.flatnonzero(words >= q)
    return int(bad[0]) if bad.size else None


def sum_ciphertexts(
    acc: np.ndarray, bufs: list[np.ndarray], offsets: np.ndarray, moduli: tuple[int, ...]
) -> tuple[int, int] | None:
    """acc += sum of the sources mod q; on a bad word return (source, flat word), acc untouched."""
    ct_bytes = acc[0].nbytes if acc.shape[0] else 0
    segments = np.stack([offsets, np.full_like(offsets, ct_bytes)], axis=-1)[:, :, None, :]
    return sum_segmented(acc, bufs, segments, moduli)


def _gather(buf: np.ndarray, segs: np.ndarray) -> np.ndarray:
    """The concatenation of the byte segments (offset, length) of one ciphertext, by one
    fancy-indexing pass: linear in the bytes and segments, however small the segments."""
    offsets, lengths = segs[:, 0].astype(np.int64), segs[:, 1].astype(np.int64)
    starts = np.cumsum(lengths) - lengths  # where each segment begins in the concatenation
    index = np.repeat(offsets - starts, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    return buf[index]


def sum_segmented(
    acc: np.ndarray, bufs: list[np.ndarray], segments: np.ndarray, moduli: tuple[int, ...]
) -> tuple[int, int] | None:
    """As sum_ciphertexts; ciphertext c of source s is the concatenation of the byte
    segments (offset, length) in segments[s, c] (shape (nsrc, count, nseg, 2))."""
    count, polys, nmod, n = acc.shape
    qs = np.broadcast_to(tables.moduli_array(moduli).reshape(1, nmod, 1), (polys, nmod, n))
    ct_words = polys * nmod * n
    bad = _first_bad(acc, np.broadcast_to(qs, acc.shape))
    if bad is not None:
        return len(bufs), bad
    total = acc.copy()
    for s, (buf, segs) in enumerate(zip(bufs, segments)):
        for c in range(count):
            words = _gather(buf, segs[c]).view(_U64).reshape(polys, nmod, n)
            bad = _first_bad(words, qs)
            if bad is not None:
                return s, c * ct_words + bad
            t = total[c] + words  # < 2^62: cannot wrap
            total[c] = np.where(t >= qs, t - qs, t)
    acc[...] = total
    return None


# -- packed residues -------------------------------------------------------------------------


def unpack_rows(words: np.ndarray, n: int, b: int) -> np.ndarray:
    """(R, W) uint64 packed rows -> (R, n): residue i is bits [i*b, (i+1)*b) of each row."""
    p = np.arange(n, dtype=np.int64) * b
    k, sh = p >> 6, (p & 63).astype(np.uint64)
    padded = np.concatenate([words, np.zeros((words.shape[0], 1), dtype=np.uint64)], axis=1)
    lo = padded[:, k] >> sh
    hi = np.where(sh > 0, (padded[:, k + 1] << np.uint64(1)) << (np.uint64(63) - sh), np.uint64(0))
    return (lo | hi) & np.uint64((1 << b) - 1)


def _unpack_all(src: np.ndarray, rows: int, n: int, moduli: tuple[int, ...]) -> np.ndarray:
    """(rows, nmod, n) from the packed rows at the uint8 src (exactly their size)."""
    words = [-(-n * q.bit_length() // 64) for q in moduli]
    w = src.view(_U64).reshape(rows, sum(words))
    out = np.empty((rows, len(moduli), n), dtype=np.uint64)
    start = 0
    for l, q in enumerate(moduli):
        out[:, l] = unpack_rows(w[:, start : start + words[l]], n, q.bit_length())
        start += words[l]
    return out


def unpack_residues(out: np.ndarray, src: np.ndarray, moduli: tuple[int, ...]) -> None:
    out[...] = _unpack_all(np.ascontiguousarray(src), out.shape[0], out.shape[2], moduli)


def sum_packed(
    acc: np.ndarray, bufs: list[np.ndarray], offsets: np.ndarray, moduli: tuple[int, ...]
) -> tuple[int, int] | None:
    """As sum_ciphertexts for packed sources (unpacked here by plain numpy)."""
    count, polys, nmod, n = acc.shape
    ct_bytes = 8 * polys * sum(-(-n * q.bit_length() // 64) for q in moduli)
    segments = []
    for buf, offs in zip(bufs, offsets):
        cts = [_unpack_all(buf[int(o) : int(o) + ct_bytes].copy(), polys, n, moduli) for o in offs]
        segments.append(np.stack(cts).view(np.uint8).reshape(-1) if cts else np.empty(0, np.uint8))
    step = polys * nmod * n * 8
    table = np.tile((np.arange(count, dtype=np.uint64) * np.uint64(step))[None, :], (len(bufs), 1))
    return sum_ciphertexts(acc, segments, table, moduli)


# -- NTT -------------------------------------------------------------------------------------


def _forward_prime(x: np.ndarray, q: int) -> np.ndarray:
    """Cooley-Tukey over an object array (rows, n), natural in, bit-reversed out."""
    rows, n = x.shape
    w, _ = tables.ntt_powers(q, n)
    m = 1
    while m < n:
        v = x.reshape(rows, m, 2, n // (2 * m))
        t = v[:, :, 1, :] * w[m : 2 * m].reshape(1, m, 1) % q
        top = v[:, :, 0, :]
        v[:, :, 0, :], v[:, :, 1, :] = (top + t) % q, (top - t) % q
        m *= 2
    return x


def _inverse_prime(x: np.ndarray, q: int) -> np.ndarray:
    """Gentleman-Sande over an object array (rows, n), bit-reversed in, natural out."""
    rows, n = x.shape
    _, iw = tables.ntt_powers(q, n)
    m = n // 2
    while m >= 1:
        v = x.reshape(rows, m, 2, n // (2 * m))
        top, bottom = v[:, :, 0, :], v[:, :, 1, :]
        v[:, :, 0, :], v[:, :, 1, :] = (
            (top + bottom) % q,
            (top - bottom) * iw[m : 2 * m].reshape(1, m, 1) % q,
        )
        m //= 2
    return x * pow(n, -1, q) % q


def _ntt(data: np.ndarray, moduli: tuple[int, ...], inverse: bool) -> None:
    step = _inverse_prime if inverse else _forward_prime
    for l, q in enumerate(moduli):
        x = _objects(data[:, l, :])
        _store(data[:, l, :], step(x, q))


def ntt_forward(data: np.ndarray, moduli: tuple[int, ...]) -> None:
    _ntt(data, moduli, inverse=False)


def ntt_inverse(data: np.ndarray, moduli: tuple[int, ...]) -> None:
    _ntt(data, moduli, inverse=True)


# -- pointwise -------------------------------------------------------------------------------


def mul(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: tuple[int, ...]) -> None:
    _store(out, _objects(a) * _objects(b) % _qcol(moduli))


def muladd(
    out: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray, moduli: tuple[int, ...]
) -> None:
    _store(out, (_objects(a) * _objects(b) + _objects(c)) % _qcol(moduli))


def add(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: tuple[int, ...]) -> None:
    _store(out, (_objects(a) + _objects(b)) % _qcol(moduli))


def sub(out: np.ndarray, a: np.ndarray, b: np.ndarray, moduli: tuple[int, ...]) -> None:
    _store(out, (_objects(a) - _objects(b)) % _qcol(moduli))


def mul_scalar(
    out: np.ndarray, a: np.ndarray, scalars: np.ndarray, moduli: tuple[int, ...]
) -> None:
    s = np.array([int(v) for v in scalars.tolist()], dtype=object).reshape(-1, 1)
    _store(out, _objects(a) * s % _qcol(moduli))


def signed_to_rns(out: np.ndarray, values: np.ndarray, moduli: tuple[int, ...]) -> None:
    """out[r, l, i] = values[r, i] mod q_l with Python ints."""
    _store(out, _objects(values)[:, None, :] % _qcol(moduli))


# -- CRT -------------------------------------------------------------------------------------


def crt_to_double(
    out: np.ndarray, data: np.ndarray, moduli: tuple[int, ...], radix: np.ndarray
) -> None:
    """Garner digits with Python ints, then the same double evaluation order as the C."""
    nmod = len(moduli)
    digits: list[np.ndarray] = []
    prefix = 1
    for l, q in enumerate(moduli):
        x_low = sum((d * p for d, p in zip(digits, _prefixes(moduli, l))), start=0)
        y = (_objects(data[:, l, :]) - x_low) * pow(prefix % q, -1, q) % q
        digits.append(y)
        prefix *= q
    halves = [(q - 1) // 2 for q in moduli]
    negative = np.zeros(out.shape, dtype=bool)
    decided = np.zeros(out.shape, dtype=bool)
    for l in reversed(range(nmod)):
        y = digits[l]
        differs = ~decided & (y != halves[l]).astype(bool)
        negative |= differs & (y > halves[l]).astype(bool)
        decided |= differs
    acc = np.zeros(out.shape, dtype=np.float64)
    for l in reversed(range(nmod)):
        shift = moduli[0] if l == 0 else moduli[l] - 1
        d = np.where(negative, digits[l] - shift, digits[l])
        acc = acc + d.astype(np.int64).astype(np.float64) * radix[l]
    out[...] = acc


def _prefixes(moduli: tuple[int, ...], l: int) -> list[int]:
    """[P_0, ..., P_{l-1}] with P_j = q_0 ... q_{j-1}."""
    out, p = [], 1
    for j in range(l):
        out.append(p)
        p *= moduli[j]
    return out


# -- exact discrete Gaussian (docs/SAMPLER.md) ----------------------------------------------------
# Python integers, one trial of four words at a time: the definition the C and numba
# kernels reproduce bit for bit.

_M64 = (1 << 64) - 1
_M96 = (1 << 96) - 1


_M84 = (1 << 84) - 1


def _plan_values(plan: np.ndarray) -> tuple[int, int, list[int], list[list[int]], list[int], list[int]]:
    """(b, κ·2^64, base rows (96-bit), tables T_j (Q127), Q127 coefficients, Q64 coefficients)."""
    from . import DG_POLY, DG_POLY_WIDE, DG_ROWS, DG_TABLE_BITS, DG_TABLES

    p = [int(v) for v in plan.tolist()]
    b, k = p[0], p[1]
    base = 2
    rows = [(p[base + 2 * i] << 32) | p[base + 2 * i + 1] for i in range(DG_ROWS)]
    base += 2 * DG_ROWS
    radix = 1 << DG_TABLE_BITS
    tables = [[(p[base + 2 * (j * radix + i)] << 64) | p[base + 2 * (j * radix + i) + 1] for i in range(radix)]
              for j in range(DG_TABLES)]
    base += 2 * DG_TABLES * radix
    wide = [(p[base + 2 * i] << 64) | p[base + 2 * i + 1] for i in range(DG_POLY_WIDE)]
    base += 2 * DG_POLY_WIDE
    narrow = p[base : base + DG_POLY + 1 - DG_POLY_WIDE]
    return b, k, rows, tables, wide, narrow


def _mul_hi(a: int, b: int) -> int:
    """≈ a·b / 2^128 for a, b ≤ 2^127 (so a1, b1 ≤ 2^63 and the middle sum fits 128 bits),
    without the low×low word product: a1·b1 + ⌊(a1·b0 + a0·b1) / 2^64⌋. Below a·b/2^128
    by less than 3."""
    a1, a0, b1, b0 = a >> 64, a & _M64, b >> 64, b & _M64
    return a1 * b1 + ((a1 * b0 + a0 * b1) >> 64)


def _exp2_poly(rest: int, wide: list[int], narrow: list[int]) -> int:
    """2^-r in Q127 for r = rest / 2^96 < 2^-12: the Taylor polynomial Σ (−1)^k c_k r^k,
    c_k = (ln 2)^k / k!, by Horner; the innermost steps (whose error is scaled by r^k)
    in Q64 with r truncated to r64 = ⌊r·2^76⌋, the rest in Q127 with r exact."""
    r64 = rest >> 20                               # ⌊r · 2^76⌋ < 2^64
    q = narrow[-1]
    for c in reversed(narrow[:-1]):                # Q64: c − r·q
        q = c - (((r64 * q) >> 64) >> 12)
    s = rest << 32                                 # r · 2^128, exact
    poly = wide[-1] - (((s >> 64) * q + (((s & _M64) * q) >> 64)) >> 1)  # Q64 q → Q127
    for c in reversed(wide[:-1]):                  # Q127: c − r·poly
        poly = c - _mul_hi(s, poly)               # r·poly: s = r·2^128
    return poly


def _accept_threshold(x: int, y: int, b: int, k: int, tables: list[list[int]], wide: list[int], narrow: list[int]) -> int:
    """A with P(accept) = A / 2^96 ≈ 2^-κ(u² + 2xu), u = y / 2^b, κ = K / 2^64."""
    u = (y << 1) << (63 - b)                      # u · 2^64, exact
    q = ((2 * x * u) << 32) + ((u * u) >> 32)      # ⌊u(u + 2x) · 2^96⌋
    h = k * (q >> 64) + ((k * (q & _M64)) >> 64)   # ⌊κ · q⌋ ≈ h · 2^96
    n, g = h >> 96, h & _M96
    e = _mul_hi(tables[0][g >> 92], tables[1][(g >> 88) & 15])  # 2^-(g's top 12 bits), Q126
    e = _mul_hi(e, tables[2][(g >> 84) & 15])                     # Q125
    e = _mul_hi(e, _exp2_poly(g & _M84, wide, narrow))            # times 2^-(the rest), Q124
    return e >> (28 + n)


def discrete_gaussian(high: np.ndarray, low: np.ndarray, words: np.ndarray, plan: np.ndarray) -> tuple[int, int]:
    b, k, rows, tables, wide, narrow = _plan_values(plan)
    w = [int(v) for v in words.tolist()]
    count = high.size
    p, i = 0, 0
    while p < count and len(w) - i >= 4:
        w0, w1, w2, w3 = w[i : i + 4]
        i += 4
        sign = w0 >> 63
        y = (w0 & (_M64 >> 1)) >> (63 - b)
        r1 = (w1 << 32) | (w3 >> 32)
        r2 = (w2 << 32) | (w3 & 0xFFFFFFFF)
        x = sum(1 for t in rows if r1 < t)       # rows: ⌊2^96·P(x > i)⌉, then 0
        z = (x << b) | y
        accept = r2 < _accept_threshold(x, y, b, k, tables, wide, narrow) and not (z == 0 and sign)
        if accept:
            v = -z if sign else z
            high[p], low[p] = v >> 32, v & 0xFFFFFFFF
            p += 1
    return p, i
