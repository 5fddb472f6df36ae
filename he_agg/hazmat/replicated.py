r"""Replicated secret sharing over the (t−1)-subsets of a committee, with 0/1 reconstruction.

A secret s is the sum of sub-secrets s_T, one per (t−1)-subset T of the n members;
member i holds every s_T with i ∉ T. Any t members hold every s_T between them (a set of
t members cannot lie inside one (t−1)-subset), and any t−1 members C miss exactly one,
s_C. To decrypt with an active set A, each s_T is *assigned* to one member of A that
holds it — by a fixed public rule, the smallest member of A not in T — and member i
contributes σ_i^A = Σ_{T assigned to i} s_T. Reconstruction coefficients are 0 or 1: no
Lagrange coefficient can amplify anything (with Shamir, t−1 colluders divide an honest
member's flooding by κ = λ_h^A·L_{h,0}; see docs/SECURITY.md), so each share's flooding
stands at full σ against everything t−1 colluders compute.

Cost: C(n, t−1) sub-secrets, C(n−1, t−1) per member — 10 and 6 at (5, 3), 210 and 126 at
(10, 5), 924 and 462 at (12, 7). :data:`MAX_MEMBERS` caps n at 12; larger deployments
shard clients across several small committees.

Every sub-secret is a ternary polynomial expanded from a 32-byte seed (:func:`expand_ternary`),
so what a member stores and what travels at key generation and enrollment is seeds.
"""

from __future__ import annotations

import itertools
import math
import struct
from functools import lru_cache
from typing import Sequence

import blake3
import numpy as np

from .sampling import KEY_BYTES, KeyedStream, cbd

__all__ = [
    "MAX_MEMBERS",
    "MAX_SUBSETS",
    "Subset",
    "assignment",
    "check_committee_shape",
    "expand_error",
    "expand_ternary",
    "expand_ternary_many",
    "held_subsets",
    "holders",
    "seed_commitment",
    "subsets",
]

MAX_MEMBERS = 12
MAX_SUBSETS = math.comb(12, 6)
Subset = tuple[int, ...]


def check_committee_shape(parties: int, threshold: int, *, allow_single: bool = False) -> None:
    """Refuse committee shapes replicated sharing cannot serve (ValueError with the reason).

    t = 1 with n > 1 would hand every member the whole key: refused unless ``allow_single``.
    """
    if type(parties) is not int or type(threshold) is not int:
        raise ValueError("n and t must be integers")
    if not 1 <= threshold <= parties <= MAX_MEMBERS:
        raise ValueError(f"need 1 <= t <= n <= {MAX_MEMBERS} (replicated sharing; shard larger committees), "
                         f"got t={threshold}, n={parties}")
    if threshold == 1 and parties > 1 and not allow_single:
        raise ValueError("t = 1 gives every member the whole key; choose t >= 2 (or pass allow_single=True)")


@lru_cache(maxsize=256)
def subsets(parties: int, threshold: int) -> tuple[Subset, ...]:
    """All (t−1)-subsets of range(n), in lexicographic order (index = position)."""
    return tuple(itertools.combinations(range(parties), threshold - 1))


def holders(subset: Subset, parties: int) -> tuple[int, ...]:
    """The members that hold s_T: everyone not in T."""
    return tuple(i for i in range(parties) if i not in subset)


@lru_cache(maxsize=4096)
def held_subsets(member: int, parties: int, threshold: int) -> tuple[int, ...]:
    """Indices (into :func:`subsets`) of the sub-secrets ``member`` holds."""
    return tuple(k for k, subset in enumerate(subsets(parties, threshold)) if member not in subset)


@lru_cache(maxsize=4096)
def assignment(active: Sequence[int], member: int, parties: int, threshold: int) -> tuple[int, ...]:
    """Indices of the sub-secrets ``member`` contributes for active set ``active``.

    Each T goes to the smallest member of A that is not in T; every T has one (|A| = t > |T|).
    The sets for the members of A partition all sub-secrets.
    """
    chosen = tuple(sorted(active))
    if len(chosen) != threshold or len(set(chosen)) != threshold or member not in chosen:
        raise ValueError(f"member {member} with active set {list(chosen)}: need t={threshold} distinct members including it")
    out = []
    for k, subset in enumerate(subsets(parties, threshold)):
        if next(i for i in chosen if i not in subset) == member:
            out.append(k)
    return tuple(out)


def _stream(seed: bytes, label: bytes, what: bytes) -> KeyedStream:
    if len(seed) != KEY_BYTES:
        raise ValueError(f"a sub-secret seed is {KEY_BYTES} bytes")
    return KeyedStream(seed, b"he_agg.rss.v1\0" + what + struct.pack("<I", len(label)) + label)


_TERNARY_DOMAIN = b"he_agg.rss.ternary.v3\0"
_TRITS = 5  # a byte below 3^5 = 243 holds five uniform base-3 digits
_DIGITS = np.array([[(b // 3**i) % 3 - 1 for i in range(_TRITS)] for b in range(243)], dtype=np.int8)


def _ternary_bytes(seed: bytes, label: bytes, draws: int) -> np.ndarray:
    if len(seed) != KEY_BYTES:
        raise ValueError(f"a sub-secret seed is {KEY_BYTES} bytes")
    xof = blake3.blake3(_TERNARY_DOMAIN + struct.pack("<I", len(label)) + label, key=seed)
    return np.frombuffer(xof.digest(length=draws), dtype=np.uint8)


def _draws(n: int) -> int:
    """XOF bytes per polynomial: enough accepted bytes (rate 243/256) but in ~10^-12 of cases."""
    need = -(-n // _TRITS)
    return int(need * 256 / 243 + 8 * math.sqrt(need) + 16)


def expand_ternary_many(seeds: Sequence[bytes], labels: Sequence[bytes], n: int) -> np.ndarray:
    """The ternary sub-secrets (int8, shape (len(seeds), n)) the seeds stand for, in one pass.

    Each polynomial is BLAKE3 in keyed XOF mode (key = the seed, input = its label) read
    byte by byte; bytes below 243 = 3^5 are kept and each gives five base-3 digits, so
    every coefficient is exactly uniform on {−1, 0, 1} and independent of the others.
    The XOF's output is a prefix of any longer output, so the rare polynomial that needs
    more bytes draws them without changing the ones before.
    """
    if len(seeds) != len(labels):
        raise ValueError("one label per seed")
    rows, need, draws = len(seeds), -(-n // _TRITS), _draws(n)
    raw = np.empty((rows, draws), dtype=np.uint8)
    for r, (seed, label) in enumerate(zip(seeds, labels)):
        raw[r] = _ternary_bytes(seed, label, draws)
    keep = raw < 243
    rank = np.cumsum(keep, axis=1, dtype=np.int32)
    short = rank[:, -1] < need
    picked = np.empty((rows, need), dtype=np.uint8)
    full = ~short
    picked[full] = raw[full][(keep & (rank <= need))[full]].reshape(-1, need)
    for r in np.nonzero(short)[0]:
        longer = draws
        while True:
            longer *= 2
            row = _ternary_bytes(seeds[r], labels[r], longer)
            row = row[row < 243]
            if row.size >= need:
                break
        picked[r] = row[:need]
    out = np.ascontiguousarray(_DIGITS[picked].reshape(rows, need * _TRITS)[:, :n])
    raw.fill(0)
    picked.fill(0)
    return out


def expand_ternary(seed: bytes, label: bytes, n: int) -> np.ndarray:
    """The ternary sub-secret (int8, n coefficients in {−1, 0, 1}) a seed stands for.

    ``label`` binds the context (committee, client, epoch, subset) so one seed can never
    stand for two sub-secrets. Same values as :func:`expand_ternary_many` row by row.
    """
    return expand_ternary_many([seed], [label], n)[0]


def expand_error(seed: bytes, label: bytes, n: int) -> np.ndarray:
    """The error polynomial (int8, SEAL's centred binomial, |e| ≤ 21) that goes with a seed."""
    values = cbd(_stream(seed, label, b"error"), n)
    out = values.astype(np.int8)
    values.fill(0)
    return out


def seed_commitment(seed: bytes, label: bytes) -> bytes:
    """A binding, hiding commitment to a seed under its label (BLAKE3 keyed by the seed)."""
    return blake3.blake3(b"he_agg.rss.commit.v1\0" + label, key=seed).digest()
