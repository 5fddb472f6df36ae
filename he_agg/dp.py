r"""Differential privacy enforced by the decryptors: policy, the request's statement, the accountant.

Central DP on what a committee releases (docs/DP.md). Each member's policy carries a
:class:`DPPolicy` (its (ε, δ) budget, the smallest noise multiplier it accepts, which
dp-accounting accountant it runs). A request asks for a DP release with a
:class:`DPStatement`: mechanism "gaussian", σ per value in the value domain and the L2
sensitivity Δ₂, which the statement derives from the layout and the clients' bounds
(``clip_l2``, ``clip_value``, the weight bound ``max_weight``, or a
:mod:`he_agg.stats` encoder's ``sensitivity``); a layout with no bound is refused
(:class:`DPSensitivityError`). Every member re-derives Δ₂ and σ from the layout itself,
refuses a σ below its policy (:class:`DPPolicyError`), and adds its part of the noise inside
its decryption share; the parts are sized so that the t − c honest members of any active
set carry the whole variance σ² (c = the context's colluder bound).

Accounting: each member keeps the list of its DP releases (one Gaussian mechanism with
noise multiplier z = σ/Δ₂ per request × active set answered) in its SQLite state, and a
release is checked against the budget and recorded in the same transaction as the release
itself (:func:`spend`); ε comes from dp-accounting's RDP (or PLD) accountant, never from a
hand-written formula. Past the budget: :class:`DPBudgetError`, and the refusal survives a
restart because the releases are on disk.

Usage (either mode)::

    spec = DPSpec(noise_multiplier=1.0, clip_l2=1.0)            # clients clip with clip_l2=1.0
    aggregator = Aggregator(context, round_id, dp=spec)
    ...
    aggregator.finalize(shares)          # aggregator.result.epsilon, .delta, .noise_std
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np

from .errors import PackingError, PolicyError, PrivacyBudgetError

__all__ = [
    "ACCOUNTANTS",
    "DPBudget",
    "DPBudgetError",
    "DPError",
    "DPPolicy",
    "DPPolicyError",
    "DPRelease",
    "DPSensitivityError",
    "DPSpec",
    "DPStatement",
    "MECHANISM",
    "epsilon_spent",
    "noise_multiplier_for",
]

MECHANISM = "gaussian"
ACCOUNTANTS = ("rdp", "pld")
_NAMESPACE = "he_agg.dp.releases"
_MAX_MULTIPLIER = 1e6


class DPError(PolicyError):
    """A differentially private release was refused."""


class DPPolicyError(DPError, ValueError):
    """The request's DP statement does not meet this member's policy (mechanism, σ, required DP)."""


class DPSensitivityError(DPError, PackingError):
    """The layout carries no sensitivity bound (no clip_l2 / clip_value / weight bound / statistic)."""


class DPBudgetError(PrivacyBudgetError, DPError):
    """Answering would spend more than this member's (ε, δ) budget; nothing was released."""


def _positive(name: str, value: object, *, upper: float = math.inf) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {type(value).__name__}")
    number = float(value)
    if not (0.0 < number < upper) or not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number in (0, {upper}), got {value!r}")
    return number


# -- the accountant ---------------------------------------------------------------------------


def _accountant(kind: str) -> Any:
    import dp_accounting

    if kind == "rdp":
        return dp_accounting.rdp.RdpAccountant()
    if kind == "pld":
        return dp_accounting.pld.PLDAccountant()
    raise ValueError(f"accountant must be one of {ACCOUNTANTS}, got {kind!r}")


def epsilon_spent(multipliers: Iterable[float], delta: float, accountant: str = "rdp") -> float:
    """ε at ``delta`` of the composition of Gaussian mechanisms with these noise multipliers
    (add/remove-one neighbours), by dp-accounting's ``accountant`` ("rdp" or "pld"); 0 for none."""
    import dp_accounting

    counts: dict[float, int] = {}
    for z in multipliers:
        counts[float(z)] = counts.get(float(z), 0) + 1
    if not counts:
        return 0.0
    acc = _accountant(accountant)
    for z, count in sorted(counts.items()):
        acc.compose(dp_accounting.GaussianDpEvent(z), count)
    return float(acc.get_epsilon(delta))


def noise_multiplier_for(epsilon: float, delta: float, releases: int = 1, accountant: str = "rdp") -> float:
    """The smallest noise multiplier z whose ``releases``-fold Gaussian composition stays within (ε, δ)."""
    import dp_accounting

    _positive("epsilon", epsilon)
    _positive("delta", delta, upper=1.0)
    if type(releases) is not int or releases < 1:
        raise ValueError("releases must be a positive integer")
    z = dp_accounting.calibrate_dp_mechanism(
        lambda: _accountant(accountant),
        lambda s: dp_accounting.SelfComposedDpEvent(dp_accounting.GaussianDpEvent(s), releases),
        epsilon, delta, dp_accounting.LowerEndpointAndGuess(1e-3, 1.0))
    return float(z) * (1.0 + 1e-9)  # calibration's tolerance: round up, never below the target


@dataclass(frozen=True)
class DPPolicy:
    """A member's differential-privacy policy.

    ``epsilon``, ``delta``: the member's whole budget (over every DP release it ever makes
    with this key share / enrolled member). ``min_noise_multiplier``: the smallest σ/Δ₂ it
    accepts for one release. ``accountant``: "rdp" (default; fast) or "pld" (tighter, slower),
    both from dp-accounting. ``require``: refuse every release without a DP statement
    (default True: the server cannot simply not ask for noise).
    """

    epsilon: float
    delta: float
    min_noise_multiplier: float = 0.5
    accountant: str = "rdp"
    require: bool = True

    def __post_init__(self) -> None:
        _positive("epsilon", self.epsilon)
        _positive("delta", self.delta, upper=1.0)
        _positive("min_noise_multiplier", self.min_noise_multiplier, upper=_MAX_MULTIPLIER)
        if self.accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}")
        if type(self.require) is not bool:
            raise ValueError("require must be True or False")

    @classmethod
    def coerce(cls, value: "DPPolicy | Mapping[str, Any] | None") -> "DPPolicy | None":
        """A policy from itself, its ``asdict`` form (how member files store it) or None."""
        if value is None or isinstance(value, DPPolicy):
            return value
        if isinstance(value, Mapping):
            return cls(**dict(value))
        raise ValueError("dp must be a DPPolicy, its dict form or None")

    def epsilon_of(self, multipliers: Iterable[float]) -> float:
        return epsilon_spent(multipliers, self.delta, self.accountant)


# -- what the user asks, and the statement a request carries -----------------------------------


@dataclass(frozen=True)
class DPSpec:
    """A DP release as the user asks for it: noise multiplier z and the clients' bounds.

    ``clip_l2``: every client clipped its vector to this L2 norm; ``clip_value``: each value
    to [−v, v]; ``sensitivity``: an explicit L2 bound on one client's vector (a
    :mod:`he_agg.stats` encoder's ``sensitivity``, an L1 bound, is a valid L2 bound: see
    :meth:`for_statistic`); ``max_weight``: the weight bound of weighted layouts (required
    there). ``delta``: the δ at which a release's ε is reported (members account at their
    own policy's δ). σ = z·Δ₂ per value.
    """

    noise_multiplier: float
    clip_l2: float | None = None
    clip_value: float | None = None
    sensitivity: float | None = None
    max_weight: float | None = None
    delta: float = 1e-5

    def __post_init__(self) -> None:
        _positive("noise_multiplier", self.noise_multiplier, upper=_MAX_MULTIPLIER)
        for name in ("clip_l2", "clip_value", "sensitivity", "max_weight"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _positive(name, value, upper=1e12))
        object.__setattr__(self, "delta", _positive("delta", self.delta, upper=1.0))

    @classmethod
    def for_statistic(cls, statistic: Any, noise_multiplier: float, *, delta: float = 1e-5) -> "DPSpec":
        """The spec for a :mod:`he_agg.stats` encoder (one site's record changes its encoding by
        at most ``statistic.sensitivity`` in L1, hence in L2)."""
        return cls(noise_multiplier, sensitivity=float(statistic.sensitivity), delta=delta)

    def bounds(self) -> dict[str, float]:
        return {k: v for k, v in (("clip_l2", self.clip_l2), ("clip_value", self.clip_value),
                                  ("sensitivity", self.sensitivity), ("max_weight", self.max_weight)) if v is not None}

    def l2_sensitivity(self, layout: Any) -> float:
        """Δ₂: the most one client's (add/remove) change moves the summed slot vector, in L2.

        The vector bound is min(clip_l2, clip_value·√values, sensitivity); a weighted layout
        sends [w·x, w] with w ≤ max_weight: Δ₂ = max_weight·√(bound² + 1)."""
        if layout is None:
            raise DPSensitivityError("a DP release needs the round's layout to derive its sensitivity")
        candidates = []
        if self.clip_l2 is not None:
            candidates.append(self.clip_l2)
        if self.clip_value is not None:
            candidates.append(self.clip_value * math.sqrt(layout.values))
        if self.sensitivity is not None:
            candidates.append(self.sensitivity)
        if not candidates:
            raise DPSensitivityError("the layout carries no sensitivity bound: clients must clip (clip_l2 or "
                                     "clip_value) or encode a statistic with a sensitivity; refused for DP release")
        bound = min(candidates)
        if layout.weighted:
            if self.max_weight is None:
                raise DPSensitivityError("a weighted layout needs a weight bound (max_weight) for a DP release")
            return self.max_weight * math.sqrt(bound * bound + 1.0)
        return bound

    def statement(self, layout: Any) -> "DPStatement":
        """The statement a request for ``layout`` carries."""
        sensitivity = self.l2_sensitivity(layout)
        return DPStatement(MECHANISM, self.noise_multiplier * sensitivity, sensitivity, self)


@dataclass(frozen=True)
class DPStatement:
    """A request's DP statement: mechanism, σ per value (value domain), Δ₂, and the spec they came from."""

    mechanism: str
    sigma: float
    sensitivity: float
    spec: DPSpec = field(repr=False)

    @property
    def noise_multiplier(self) -> float:
        return self.sigma / self.sensitivity

    def to_json(self) -> dict[str, Any]:
        return {"mechanism": self.mechanism, "sigma": self.sigma, "sensitivity": self.sensitivity,
                "noise_multiplier": self.spec.noise_multiplier, "delta": self.spec.delta, "bounds": self.spec.bounds()}

    @classmethod
    def from_json(cls, obj: object, layout: Any) -> "DPStatement":
        """Parse and re-derive: the stated σ and Δ₂ must be what the spec gives for ``layout``."""
        from .errors import FormatError

        if not isinstance(obj, dict) or set(obj) != {"mechanism", "sigma", "sensitivity", "noise_multiplier",
                                                     "delta", "bounds"}:
            raise FormatError("a DP statement is an object with mechanism, sigma, sensitivity, noise_multiplier, "
                              "delta and bounds")
        bounds = obj["bounds"]
        if not isinstance(bounds, dict) or not set(bounds) <= {"clip_l2", "clip_value", "sensitivity", "max_weight"}:
            raise FormatError("the DP statement's bounds are clip_l2, clip_value, sensitivity, max_weight")
        if obj["mechanism"] != MECHANISM:
            raise DPPolicyError(f"DP mechanism {obj['mechanism']!r} is not supported (only {MECHANISM!r})")
        try:
            spec = DPSpec(obj["noise_multiplier"], delta=obj["delta"], **bounds)
        except (TypeError, ValueError) as exc:
            raise FormatError(f"bad DP statement ({exc})") from None
        statement = spec.statement(layout)
        if not (statement.sigma == obj["sigma"] and statement.sensitivity == obj["sensitivity"]):
            raise DPPolicyError(f"the DP statement says σ={obj['sigma']!r}, Δ₂={obj['sensitivity']!r}; its bounds and "
                                f"layout give σ={statement.sigma!r}, Δ₂={statement.sensitivity!r}")
        return statement

    def epsilon(self, releases: int = 1, accountant: str = "rdp") -> float:
        """ε at the spec's δ of ``releases`` such releases (one per active set answered)."""
        return epsilon_spent([self.noise_multiplier] * releases, self.spec.delta, accountant)


def request_statement(raw: object, layout_json: object) -> DPStatement | None:
    """A request's DP statement from its JSON (None: no DP asked), re-derived from the layout."""
    if raw is None:
        return None
    from .packing import Layout

    layout = Layout.from_json(layout_json) if layout_json is not None else None
    return DPStatement.from_json(raw, layout)


# -- member side: check and spend ----------------------------------------------------------------


def check(policy: DPPolicy | None, statement: DPStatement | None) -> None:
    """The member-side policy check of a request's statement (before approving or answering)."""
    if statement is None:
        if policy is not None and policy.require:
            raise DPPolicyError("this member releases only differentially private aggregates: the request carries "
                                "no DP statement (ask with dp=DPSpec(...))")
        return
    if policy is None:
        raise DPPolicyError("the request asks for a DP release but this member has no DP policy to account it")
    if statement.mechanism != MECHANISM:
        raise DPPolicyError(f"DP mechanism {statement.mechanism!r} is not supported")
    if statement.noise_multiplier < policy.min_noise_multiplier * (1.0 - 1e-12):
        raise DPPolicyError(f"the request's σ = {statement.sigma:.6g} is {statement.noise_multiplier:.4g}·Δ₂; this "
                            f"member's policy needs σ ≥ {policy.min_noise_multiplier:g}·Δ₂ = "
                            f"{policy.min_noise_multiplier * statement.sensitivity:.6g}")


def _recorded(state: Any) -> list[float]:
    return [float(json.loads(raw)["z"]) for _, raw in state.items(_NAMESPACE)]


def spend(state: Any, policy: DPPolicy, key: bytes, statement: DPStatement, *, record: bool = True) -> None:
    """Check the release ``key`` against the budget and (``record``) record it, in one transaction.

    A retry (``key`` already recorded) is free. Raises :class:`DPBudgetError` past the budget."""
    name = key.hex()
    with state.transaction():
        if state.get(_NAMESPACE, name) is not None:
            return
        spent = _recorded(state)
        after = policy.epsilon_of(spent + [statement.noise_multiplier])
        if after > policy.epsilon:
            raise DPBudgetError(
                f"this release (σ = {statement.noise_multiplier:.4g}·Δ₂) would bring this member's privacy loss to "
                f"ε = {after:.4g} at δ = {policy.delta:g}, over its budget ε = {policy.epsilon:g} "
                f"({len(spent)} DP releases so far); nothing was released")
        if record:
            state.put(_NAMESPACE, name, json.dumps({"z": statement.noise_multiplier}).encode())


class DPBudget(NamedTuple):
    """A member's DP account: releases made, ε spent at its δ, its budget ε."""

    releases: int
    epsilon: float
    delta: float
    budget: float

    @property
    def remaining(self) -> float:
        return max(self.budget - self.epsilon, 0.0)


def budget(state: Any, policy: DPPolicy | None) -> DPBudget | None:
    """The member's DP account from its state (None without a DP policy)."""
    if policy is None:
        return None
    spent = _recorded(state)
    return DPBudget(len(spent), policy.epsilon_of(spent), policy.delta, policy.epsilon)


# -- coefficient-domain calibration --------------------------------------------------------------


def coefficient_sigma(statement: DPStatement, context: Any, *, dense: bool) -> float:
    """σ of ONE member's integer noise part, per coefficient (docs/DP.md).

    The t − c honest parts must give each value variance σ²: a coefficient variance v maps
    to v/Δ² per value (dense) or v·(N/2)/Δ² per slot (canonical embedding, real part). So
    each part has σ_c = σ·Δ / √(t − c) (dense) or σ·Δ / √((t − c)·N/2) (slots)."""
    from .errors import ParameterError

    params = context.params
    honest = context.threshold - context.colluders
    spread = 1.0 if dense else math.sqrt(params.n / 2.0)
    sigma = statement.sigma * params.scale / (spread * math.sqrt(honest))
    log_q = sum(math.log2(q) for q in params.data_moduli)
    if sigma < 2.0:
        raise ParameterError("the DP noise is below the encoding's resolution; raise σ or the scale")
    if math.log2(sigma * context.threshold) + 8 > log_q - 2:
        raise DPPolicyError(f"DP noise σ = {statement.sigma:g} per value would wrap the ciphertext modulus at "
                            f"scale 2^{math.log2(params.scale):.0f}: bound the values more tightly")
    return sigma


def release_std(statement: DPStatement, context: Any, active_sets: int) -> float:
    """Actual std of the DP noise per released value: all t parts, averaged over the active sets."""
    honest = context.threshold - context.colluders
    return statement.sigma * math.sqrt(context.threshold / honest / active_sets)


class DPRelease(NamedTuple):
    """A DP combine's output: values, (ε, δ) of this release, the noise std per value, the excluded member."""

    values: np.ndarray
    epsilon: float
    delta: float
    noise_std: float
    guaranteed_std: float
    faulty: int | None = None


def released(values: Any, request: Any) -> DPRelease:
    """Wrap a combine's values (or a robust Combined) for a DP request."""
    statement: DPStatement = request.dp
    faulty = None
    if hasattr(values, "faulty"):
        values, faulty = values.values, values.faulty
    sets = len(request.active_sets)
    return DPRelease(values, statement.epsilon(sets), statement.spec.delta,
                     release_std(statement, request.context, sets), statement.sigma, faulty)
