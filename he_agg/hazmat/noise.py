r"""The noise model: how large the aggregate's noise can be, and how much flooding hides it.

Threshold decryption releases ``c0 + Σ_i d_i`` with ``d_i = λ_i·s_i·c1 + e_i``. Without
the flooding noise ``e_i`` the result would be ``m + v``, and the decryption noise ``v``
depends on the secret key: releasing it leaks. Each share therefore carries its own
flooding noise of standard deviation σ = 2^s·B, where B bounds every coefficient of v
(except with probability 2^-f) and s is the statistical security parameter. This module
derives B from the encryption procedure; nothing in it is fitted to measurements (the
tests measure real TenSEAL noise and check it stays below B).

Derivation (one fresh TenSEAL/SEAL public-key ciphertext)
---------------------------------------------------------
SEAL encrypts at the key level (all primes, special prime p last):
``(c0, c1) = (pk0·u + e1, pk1·u + e2)`` with u ternary, e1, e2 from SEAL's error law
(centred binomial, variance 10.5, |e| ≤ 21; or clipped normal σ=3.2, |e| ≤ 19.2), then
divides both polynomials by p with rounding (``divide_and_round_q_last``) and adds the
encoded message. With pk = (−(a·s + e), a) the decryption noise at the data level is

    v = (e·u + e1 + e2·s)/p  −  r0  −  r1·s,       r0, r1 ∈ [−1/2, 1/2]^N (rounding)

plus the message's encoding rounding (|·| ≤ 1/2 per coefficient).

* The first term is tiny: |·| ≤ (N·21h + 21 + N·21h)/p < 2^-25 at the default parameters.
* ``r1·s``: coefficient i is Σ_j ±r1_j·s_{i−j}, a sum of independent, zero-mean terms
  bounded by |s_{i−j}|/2, hence sub-Gaussian with variance proxy ||s||²/4 (Hoeffding).
  r0 adds 1/4. (That the rounding errors are independent and zero-mean is the standard
  CKKS heuristic; the divided values are pseudo-random.)
* The key norm ||s||² (s a sum of h ternary secrets: h = 1 for a trusted dealer, h = n
  for dealer-free keys) is bounded by a Chernoff bound computed exactly from the
  distribution of one coefficient, at failure probability 2^-f.

Summing K ciphertexts adds K independent such noises (same s): variance proxy
V = K·(||s||²_max + 1)/4. With M coefficients in the batch, a union bound gives

    B = sqrt(2·V·ln(2·M·2^f)) + K·(1/2 + 2^-25)

Flooding and what it buys
-------------------------
σ = 2^s·B per share (default s = 40). For one coefficient, the statistical distance
between ``e + v`` and ``e`` is at most |v|/(σ·√(2π)) < 2^-s. For the whole release of
M coefficients, the KL divergence adds up and Pinsker's inequality gives a distance of
at most √M·2^-(s+1) (2^-30.5 for a 1M-value release at s = 40); raise s by ½·log2(M)
for a whole-release guarantee at 2^-s. Each distinct share a key share makes adds its
own term: the decryption budget bounds the total.

Precision: t shares add noise of variance t·σ² per coefficient; decoding maps it to
each real slot with standard deviation σ·√(t·N/2)/scale. :meth:`NoiseModel.predicted_error`
reports the expected maximum over the released values.

Dense public-key encryption (``dense=True``)
--------------------------------------------
:func:`he_agg.hazmat.pkenc.encrypt_dense` is SEAL's procedure above with the exact dense
encoding: the same (e·u + e1 + e2·s)/p − r0 − r1·s, and instead of a deterministic encoding
rounding (|·| ≤ 1/2) the randomized rounding ρ of x·Δ: |ρ| < 1, zero mean, sub-Gaussian with
proxy 1/4 (Hoeffding). So per fresh ciphertext the variance proxy is (||s||² + 2)/4 and the
deterministic part is the divided key-level term alone:

    B_dense = sqrt(2·K·(||s||²_max + 2)/4 · ln(2·M·2^f)) + K·2^-25

B_dense ≤ B (slots) whenever √(K·ln(2M·2^f)/2)·(√(S+2) − √(S+1)) ≤ K/2, i.e. always here
(S = ||s||²_max ≥ N/2 ≥ 512, ln(2M·2^f) < 200): members, which size their flood with B, cover
dense rounds too. Decoding reads coefficient k divided by Δ: no √(N/2) spread, so one value's
flooding error has standard deviation σ·√t/Δ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..params import Params

__all__ = ["ENROLLED_CLIENT_PROXY", "EnrolledNoiseModel", "NoiseModel", "dp_noise", "dp_part_variance", "dp_shift"]

_ERROR_BOUND = 21  # SEAL's centred binomial bound (clipped normal: 19.2)


@lru_cache(maxsize=64)
def _ternary_sum_pmf(h: int) -> tuple[np.ndarray, np.ndarray]:
    """Support and probabilities of one coefficient of a sum of h uniform ternaries."""
    pmf = np.array([1.0])
    for _ in range(h):
        pmf = np.convolve(pmf, np.full(3, 1.0 / 3.0))
    support = np.arange(-h, h + 1, dtype=np.float64)
    return support, pmf


@lru_cache(maxsize=256)
def secret_norm_bound(n: int, h: int, failure_bits: int) -> float:
    """a with P(||s||² ≥ a) ≤ 2^-failure_bits for s = sum of h ternary polynomials (Chernoff)."""
    support, pmf = _ternary_sum_pmf(h)
    squares = support**2
    mean = float(pmf @ squares) * n
    log_target = -failure_bits * math.log(2.0)

    def log_tail(a: float) -> float:  # min over λ of −λa + N·log E[e^{λX}]
        best = 0.0
        for lam in np.geomspace(1e-6, 10.0, 400) / max(h * h, 1):
            log_mgf = math.log(float(pmf @ np.exp(lam * squares)))
            best = min(best, -lam * a + n * log_mgf)
        return best

    lo, hi = mean, float(n * h * h)
    if log_tail(hi) > log_target:  # cannot happen for N ≥ 1024; keep the worst case then
        return hi
    for _ in range(60):  # bisection on a: the tail bound decreases in a
        mid = 0.5 * (lo + hi)
        if log_tail(mid) <= log_target:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class NoiseModel:
    """Noise bound B and flooding σ for sums of fresh TenSEAL ciphertexts under ``params``.

    ``secret_terms`` is h, the number of ternary secrets summed into the key (1 for a
    trusted dealer, n for dealer-free generation). ``statistical_bits`` is s,
    ``failure_bits`` is f (the probability that the real noise exceeds B is ≤ 2^-f).
    """

    params: Params
    secret_terms: int = 1
    statistical_bits: int = 40
    failure_bits: int = 40

    def __post_init__(self) -> None:
        if not 1 <= self.secret_terms <= 1 << 14:
            raise ValueError("secret_terms must be in [1, 16384]")
        if not 16 <= self.statistical_bits <= 128:
            raise ValueError("statistical_bits must be in [16, 128]")
        if not 16 <= self.failure_bits <= 128:
            raise ValueError("failure_bits must be in [16, 128]")

    @property
    def secret_norm_squared(self) -> float:
        return secret_norm_bound(self.params.n, self.secret_terms, self.failure_bits)

    def fresh_variance_proxy(self, *, dense: bool = False) -> float:
        """Sub-Gaussian variance proxy of one coefficient of one fresh ciphertext's noise
        (``dense``: the native dense encryptor's, randomized rounding included)."""
        return (self.secret_norm_squared + (2.0 if dense else 1.0)) / 4.0

    def _deterministic_part(self, dense: bool = False) -> float:
        n, h = self.params.n, self.secret_terms
        key_level = (2 * n * _ERROR_BOUND * h + _ERROR_BOUND) / self.params.special_modulus
        return key_level if dense else 0.5 + key_level  # (slots: encoding rounding) + the divided key-level noise

    def bound(self, summed: int, coefficients: int, *, dense: bool = False) -> float:
        """B: bounds every coefficient of the noise of a sum of ``summed`` fresh ciphertexts.

        ``coefficients`` is how many coefficients the union bound covers (N × ciphertexts).
        ``dense``: ciphertexts of :func:`he_agg.hazmat.pkenc.encrypt_dense` (B_dense ≤ B).
        """
        if summed < 1 or coefficients < 1:
            raise ValueError("summed and coefficients must be positive")
        variance = summed * self.fresh_variance_proxy(dense=dense)
        tail = math.sqrt(2.0 * variance * (math.log(2.0 * coefficients) + self.failure_bits * math.log(2.0)))
        return tail + summed * self._deterministic_part(dense)

    def flooding_sigma(self, summed: int, coefficients: int, *, dense: bool = False) -> float:
        """σ of each share's flooding noise: 2^s · B (members use the slot B, which covers dense)."""
        return math.ldexp(self.bound(summed, coefficients, dense=dense), self.statistical_bits)

    def _spread(self, dense: bool) -> float:
        """Decoding's factor from a coefficient's noise to one value's: √(N/2) (slots), 1 (dense)."""
        return 1.0 if dense else math.sqrt(self.params.n / 2.0)

    def slot_std(self, sigma: float, shares: int, *, dense: bool = False) -> float:
        """Standard deviation of one decoded value due to ``shares`` flooding terms."""
        return sigma * math.sqrt(shares) * self._spread(dense) / self.params.scale

    def predicted_error(self, summed: int, coefficients: int, shares: int, values: int, *,
                        dense: bool = False) -> float:
        """Expected max |error| over ``values`` decoded values (flooding dominates)."""
        std = self.slot_std(self.flooding_sigma(summed, coefficients), shares, dense=dense)
        return std * math.sqrt(2.0 * math.log(2.0 * max(values, 1)))

    def error_bound(self, summed: int, coefficients: int, shares: int, values: int, *, dense: bool = False,
                    sigma: float | None = None) -> float:
        """Documented bound on max |decrypted − exact sum| over ``values`` values.

        Flooding (t·σ² per coefficient; σ defaults to the members' :meth:`flooding_sigma`)
        plus the aggregate's own noise (variance proxy ``summed``·proxy), mapped to a value
        (× √(N/2) / scale for slots, × 1/scale dense), times a Gaussian tail factor with
        failure probability 2^-f over all values.
        """
        sigma = self.flooding_sigma(summed, coefficients) if sigma is None else sigma
        variance = shares * sigma**2 + summed * self.fresh_variance_proxy(dense=dense)
        std = math.sqrt(variance) * self._spread(dense) / self.params.scale
        tail = math.sqrt(2.0 * (math.log(2.0 * max(values, 1)) + self.failure_bits * math.log(2.0)))
        return std * tail

    def agreement_bound(self, summed: int, coefficients: int, shares: int, values: int, *,
                        dense: bool = False) -> float:
        """Largest honest difference between two decryptions by different active sets.

        Two independent flooded decryptions differ by noise of std √2 × slot_std; this
        is that std times a tail factor with failure probability 2^-f over all values.
        """
        std = math.sqrt(2.0) * self.slot_std(self.flooding_sigma(summed, coefficients), shares, dense=dense)
        return std * math.sqrt(2.0 * (math.log(2.0 * max(values, 1)) + self.failure_bits * math.log(2.0)))

    def min_scale_log2(self, summed: int, coefficients: int, shares: int, values: int, target: float, *,
                       dense: bool = False) -> float:
        """log2 of the smallest Δ whose :meth:`error_bound` is at most ``target`` (σ does not depend on Δ)."""
        if not target > 0:
            raise ValueError("target must be positive")
        return math.log2(self.error_bound(summed, coefficients, shares, values, dense=dense)
                         * self.params.scale / target)

    def release_distance_log2(self, coefficients: int) -> float:
        """log2 of the whole-release statistical distance bound √M·2^-(s+1) (Pinsker)."""
        return 0.5 * math.log2(coefficients) - self.statistical_bits - 1.0


#: Sub-Gaussian variance proxy of one enrolled client's noise per coefficient: SEAL's error
#: law (centred binomial of 2×21 bits: a sum of 42 independent ±½ terms, proxy 42/4 = 10.5)
#: plus randomized rounding (zero-mean, in an interval of length 1: proxy 1/4, Hoeffding).
ENROLLED_CLIENT_PROXY = 10.5 + 0.25


@dataclass(frozen=True)
class EnrolledNoiseModel:
    r"""Flooding for enrolled-client releases, sized for a member's whole key epoch.

    A release is C0 + Σ_i d_i = Σ_k Encode(w·m_k) + x + Σ_i f_i with x = Σ_{k∈S} (e_k + ρ_k):
    the clients' errors and rounding, which t−1 colluders must not learn (with them, a
    member's share gives away its key sums). Each honest member's flood f alone must hide x,
    over every coefficient it ever answers in the epoch (a budget of M coefficient-answers).

    Per coefficient, KL(N(x, σ²) ‖ N(0, σ²)) = x²/(2σ²); KL adds up over independent
    answers, and Pinsker turns it into a statistical distance ≤ √(Σx²)/(2σ). Each x is
    sub-Gaussian with proxy V = K·v (K ≤ ``max_clients`` summed clients,
    v = :data:`ENROLLED_CLIENT_PROXY`), so E exp(λx²) ≤ (1 − 2λV)^(−1/2) and the χ² upper
    tail of Laurent–Massart applies: Σx² ≤ V·(M + 2√(M·L) + 2L) except with probability
    e^(−L), L = f·ln 2. Hence

        σ = 2^(s−1) · √(V·(M + 2√(M·L) + 2L))

    keeps the whole epoch within 2^-s (plus 2^-f). At K = 1,000, M = 2^30, s = f = 40:
    σ ≈ 2^60.7. The flood hides coefficients, so σ is the same for both packings.

    Precision. The error of the released polynomial, coefficient by coefficient, is
    y = Σ_i f_i + x: t independent floods (variance t·σ²) plus the clients' noise (variance
    proxy K·v), independent across coefficients.

    * Slot packing: value i is Re Σ_c y_c·ζ^(e_i·c) / Δ, N terms with |ζ| = 1 whose real
      parts have mean square ½: standard deviation √((tσ² + Kv)·N/2)/Δ.
    * Dense packing: value k is y_k/Δ itself: standard deviation √(tσ² + Kv)/Δ, no √(N/2)
      (64 at N = 8192). At Δ = 2^94, t = 3, K = 1,000: about 1.6e-10 per value, and the
      max over 2^20 values stays below 2e-9 (slots: about 1e-7).

    :meth:`error_bound` is that standard deviation times a Gaussian tail factor over all
    values at 2^-f; :meth:`min_scale_log2` inverts it. The encoding rounding is inside x
    (randomized rounding, proxy ¼); dense encoding has no other error (exact, power-of-two
    Δ), slot encoding adds its float64 transform's rounding (not covered here).
    """

    params: Params
    statistical_bits: int = 40
    failure_bits: int = 40

    def __post_init__(self) -> None:
        if not 16 <= self.statistical_bits <= 128 or not 16 <= self.failure_bits <= 128:
            raise ValueError("statistical_bits and failure_bits must be in [16, 128]")

    def flooding_sigma(self, max_clients: int, epoch_coefficients: int) -> float:
        """σ of each answer's flood for a member that sums at most ``max_clients`` clients per
        release and answers at most ``epoch_coefficients`` coefficients in the epoch."""
        if max_clients < 1 or epoch_coefficients < 1:
            raise ValueError("max_clients and epoch_coefficients must be positive")
        proxy = max_clients * ENROLLED_CLIENT_PROXY
        tail = self.failure_bits * math.log(2.0)
        m = float(epoch_coefficients)
        total = proxy * (m + 2.0 * math.sqrt(m * tail) + 2.0 * tail)
        return math.ldexp(math.sqrt(total), self.statistical_bits - 1)

    def epoch_distance_log2(self, sigma: float, max_clients: int, coefficients: int) -> float:
        """log2 of the statistical distance after ``coefficients`` answers at σ (the bound above)."""
        proxy = max_clients * ENROLLED_CLIENT_PROXY
        tail = self.failure_bits * math.log(2.0)
        total = proxy * (coefficients + 2.0 * math.sqrt(coefficients * tail) + 2.0 * tail)
        return math.log2(math.sqrt(total) / (2.0 * sigma))

    def slot_std(self, sigma: float, shares: int, *, dense: bool = False) -> float:
        """Standard deviation of one decoded value due to ``shares`` floods of σ."""
        spread = 1.0 if dense else math.sqrt(self.params.n / 2.0)
        return sigma * math.sqrt(shares) * spread / self.params.scale

    def error_bound(self, sigma: float, shares: int, clients: int, values: int, *, dense: bool = False) -> float:
        """Bound on max |decrypted − exact| over ``values`` values, failure probability 2^-f.

        ``dense``: coefficient packing (no √(N/2) spread; see the class docstring)."""
        return self._unit_bound(sigma, shares, clients, values, dense) / self.params.scale

    def min_scale_log2(self, sigma: float, shares: int, clients: int, values: int, target: float, *,
                       dense: bool = False) -> float:
        """log2 of the smallest Δ whose :meth:`error_bound` is at most ``target``."""
        if not target > 0:
            raise ValueError("target must be positive")
        return math.log2(self._unit_bound(sigma, shares, clients, values, dense) / target)

    def _unit_bound(self, sigma: float, shares: int, clients: int, values: int, dense: bool) -> float:
        spread = 1.0 if dense else math.sqrt(self.params.n / 2.0)
        variance = shares * sigma**2 + clients * ENROLLED_CLIENT_PROXY
        tail = math.sqrt(2.0 * (math.log(2.0 * max(values, 1)) + self.failure_bits * math.log(2.0)))
        return math.sqrt(variance) * spread * tail


#: The DP part is 2^k·X + U with X ~ D_{Z,σ/2^k} (the exact sampler) and U uniform on
#: [−2^(k−1), 2^(k−1)): k is the least shift that brings σ/2^k below 2^60 (the sampler takes σ ≤ 2^64).
DP_INNER_BITS = 59


def dp_shift(sigma: float) -> int:
    """k for a DP part of σ: 0 while σ < 2^60 (a plain discrete Gaussian), else ⌊log2 σ⌋ − 59."""
    if not sigma >= 2.0 or not math.isfinite(sigma):
        raise ValueError("the DP noise σ must be a finite number >= 2")
    return max(0, math.floor(math.log2(sigma)) - DP_INNER_BITS)


def dp_part_variance(sigma: float) -> float:

    from .sampling import sigma_actual

    k = dp_shift(sigma)
    inner = sigma_actual(sigma / 2.0**k)
    return 4.0**k * inner * inner + (4.0**k - 1.0) / 12.0


def dp_noise(stream: Any, count: int, sigma: float, params: Params) -> np.ndarray:
    """``count`` DP noise polynomials of one member as NTT residues (count, L, N), from its keyed stream.

    Coefficients are independent 2^k·X + U (see :data:`DP_INNER_BITS`), variance
    :func:`dp_part_variance` (σ² up to a relative 2^-60)."""
    from . import kernels
    from .ckks import scaled_to_rns, signed_to_rns
    from .sampling import discrete_gaussian

    n, moduli = params.n, params.data_moduli
    k = dp_shift(sigma)
    high, low = discrete_gaussian(stream, count * n, sigma / 2.0**k)
    out = scaled_to_rns(high.reshape(count, n), 32, low.reshape(count, n), moduli)
    high.fill(0)
    low.fill(0)
    if k:
        kernels.mul_scalar(out, out, np.array([pow(2, k, q) for q in moduli], dtype=np.uint64), moduli)
        fine = (stream.words(count * n) >> np.uint64(64 - k)).astype(np.int64) - (1 << (k - 1))
        extra = signed_to_rns(fine.reshape(count, n), moduli)
        fine.fill(0)
        kernels.add(out, out, extra, moduli)
        extra.fill(0)
    kernels.ntt_forward(out, moduli)
    return out
