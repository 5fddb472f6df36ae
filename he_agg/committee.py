"""The decryption committee: key generation, approval, and combining shares into the released values.

:class:`Committee` is a convenience for one process (simulations, tests, the demo): it
holds every key share and runs the two steps of a decryption — approvals into a quorum
certificate, then shares from the request's active sets. Real deployments give each
:class:`~he_agg.keyshare.KeyShare` to a different member and move the bytes themselves.

:func:`combine` needs no secret. Given shares for one complete active set it decrypts.
Given shares for several active sets (the request named them, e.g. from
:func:`verification_sets`) it also checks that the sets *agree* within the flooding-noise
bound; when they do not, the member present in every disagreeing set and absent from the
agreeing ones is named. With only t+1 members a faulty member cannot be located (every
set but one contains it): the error says so; name t+2 members' sets.

``robust=True`` finishes the round despite one faulty member instead of raising: when
exactly one member is named (its shares disagree, or it sent a share bound to another
request), the values are decoded from the complete sets without it, which must agree among
themselves, and a :class:`Combined` report records whom it excluded. Without a unique
suspect it still raises.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Sequence

import numpy as np

from .ciphertext import Submission
from .context import PublicContext
from .dp import DPRelease, release_std
from .dp import released as dp_released
from .errors import InconsistentShareError, ShareBindingError, ThresholdError
from .hazmat import kernels
from .hazmat.decryption import decode_phase, phase
from .keygen import KeygenConfig, KeygenParty, deal
from .identity import PartyIdentity
from .keyshare import KeyShare, Policy
from .packing import Layout, ciphertext_count
from .params import AGGREGATION, Params
from .quorum import Approval, QuorumCertificate, quorum_size
from .requests import DecryptionRequest, DecryptionShare

__all__ = ["Combined", "Committee", "DPRelease", "combine", "combine_enrolled", "combine_phase", "run_keygen", "verification_sets"]

MAX_SETS = 64


def verification_sets(parties: Sequence[int], threshold: int) -> list[tuple[int, ...]]:
    """Every t-subset of ``parties``: one set for t parties, t+1 "leave-one-out" sets for t+1."""
    chosen = sorted(set(parties))
    if len(chosen) < threshold:
        raise ThresholdError(f"need at least t={threshold} parties, got {len(chosen)}")
    sets = list(itertools.combinations(chosen, threshold))
    if len(sets) > MAX_SETS:
        raise ThresholdError(f"{len(sets)} active sets is too many to cross-check; use at most t+2 parties")
    return sets


class Combined(NamedTuple):
    """What a robust combine released: the values and the member it excluded (None: nobody)."""

    values: np.ndarray
    faulty: int | None


def combine(request: DecryptionRequest, shares: Sequence[DecryptionShare | bytes], *,
            robust: bool = False) -> Any:
    """The decrypted values (float64, ``request.aggregate.length``) from decryption shares.

    ``robust=True``: a :class:`Combined` (values, excluded member) instead of raising when
    exactly one member is named faulty (see :func:`combine_phase`). A DP request
    (``request.dp``) returns a :class:`~he_agg.dp.DPRelease` instead (values, ε, δ, noise
    std per value, excluded member), robust or not.
    """
    c0 = np.ascontiguousarray(request.aggregate.data[:, 0])
    model = request.context.noise_model()
    packing = Layout.from_json(request.layout).packing if request.layout is not None else request.aggregate.packing
    if request.aggregate.count != ciphertext_count(request.aggregate.length, request.context.params, packing):
        raise ShareBindingError(f"the request's aggregate has {request.aggregate.count} ciphertexts; its layout "
                                f"({packing} packing) needs another count")
    dense = packing == "dense"
    out = combine_phase(request, c0, shares, request.aggregate.length,
                        _with_dp(request, lambda sigma: model.slot_std(sigma, request.context.threshold, dense=dense)),
                        packing=packing, robust=robust)
    return out if request.dp is None else dp_released(out, request)


def _with_dp(request: Any, slot_std: Callable[[float], float]) -> Callable[[float], float]:
    """The per-value std one active set's decryption has: flooding, plus the DP noise of a DP request
    (the agreement check between active sets must allow for it)."""
    statement = getattr(request, "dp", None)
    if statement is None:
        return slot_std
    dp_std = release_std(statement, request.context, 1)
    return lambda sigma: math.hypot(slot_std(sigma), dp_std)


def _decode_dense(ntt_phase: np.ndarray, params: Params) -> np.ndarray:
    """Dense packing: the phase's coefficients divided by the scale are the values (no FFT)."""
    kernels.ntt_inverse(ntt_phase, params.data_moduli)
    return kernels.crt_to_double(ntt_phase, params.data_moduli, params.scale)


def combine_phase(request: Any, c0: np.ndarray, shares: Sequence[DecryptionShare | bytes], length: int,
                  slot_std: Callable[[float], float], *, packing: str = "slots", robust: bool = False) -> Any:
    """c0 + Σ shares, decoded, for each complete active set of ``request``; cross-checked when several.

    ``request`` has ``context``, ``digest`` and ``active_sets``; ``c0`` is (count, L, N) NTT
    residues; ``slot_std(σ)`` is the standard deviation one decoded value gets from t floods.
    ``packing``: "slots" decodes with the canonical embedding; "dense" reads coefficients.
    ``robust``: return :class:`Combined`; a single member named faulty — its shares disagree
    with the others, or it sent a share bound to another request, committee, shape or set —
    is excluded and recorded instead of raising. Two or more such members, or a disagreement
    no single member explains, still raise.
    """
    context = request.context
    parsed = [_parse(s, context) for s in shares]
    misbound = _misbound(request, c0.shape, parsed) if robust else None
    if misbound is not None:
        parsed = [s for s in parsed if s.party != misbound]
    groups = _group(request, c0.shape, parsed)
    complete = {active: group for active, group in groups.items()
                if set(group) == set(active) and misbound not in active}
    if not complete:
        have = {active: sorted(group) for active, group in groups.items()}
        raise ThresholdError(f"no active set has all {context.threshold} shares"
                             f"{'' if misbound is None else f' without member {misbound}'}; received {have or 'none'}")
    params = context.params
    decode = _decode_dense if packing == "dense" else decode_phase
    values = {active: decode(phase(c0, [s.residues for s in group.values()], params), params).reshape(-1)[:length]
              for active, group in complete.items()}
    faulty = misbound
    if len(values) > 1:
        sigma = max(share.sigma for group in complete.values() for share in group.values())
        named = _check_agreement(values, slot_std(sigma), length, robust=robust and misbound is None)
        if named is not None:
            faulty = named
            values = {active: v for active, v in values.items() if named not in active}
    mean = np.mean(np.stack(list(values.values())), axis=0)
    return Combined(mean, faulty) if robust else mean


def _misbound(request: Any, shape: tuple[int, ...], shares: list[DecryptionShare]) -> int | None:
    """The one member whose shares are bound to another committee, request, shape or set (robust mode).

    The share names its own member; a share sent by one member under another's index is a
    disagreement the agreement check sees. Two members with misbound shares: raise.
    """
    context = request.context
    bad = sorted({s.party for s in shares
                  if s.committee_id != context.committee_id or s.request_digest != request.digest
                  or s.residues.shape != shape or s.active not in request.active_sets})
    if len(bad) > 1:
        raise ShareBindingError(f"members {bad} sent shares made for another committee, request, ciphertext or "
                                "active set; a robust combine excludes at most one member")
    return bad[0] if bad else None


def _parse(share: DecryptionShare | bytes, context: Any) -> DecryptionShare:
    return share if isinstance(share, DecryptionShare) else DecryptionShare.from_bytes(share, context)


def _group(request: Any, shape: tuple[int, ...], shares: list[DecryptionShare]) -> dict[tuple[int, ...], dict[int, DecryptionShare]]:
    context = request.context
    groups: dict[tuple[int, ...], dict[int, DecryptionShare]] = {}
    for share in shares:
        if share.committee_id != context.committee_id:
            raise ShareBindingError(f"the share of member {share.party} was made by another committee")
        if share.request_digest != request.digest:
            raise ShareBindingError(f"the share of member {share.party} was made for another request or ciphertext")
        if share.residues.shape != shape:
            raise ShareBindingError(f"the share of member {share.party} has shape {share.residues.shape}, expected {shape}")
        if share.active not in request.active_sets:
            raise ShareBindingError(f"the share of member {share.party} is for an active set the request does not name")
        group = groups.setdefault(share.active, {})
        earlier = group.get(share.party)
        if earlier is not None and not np.array_equal(earlier.residues, share.residues):
            raise InconsistentShareError(
                f"member {share.party} sent two different shares for the active set {list(share.active)}",
                share.party)
        group[share.party] = share
    return groups


#: Failure probability (bits) of the agreement bound between two honest decryptions.
AGREEMENT_FAILURE_BITS = 40


def _check_agreement(values: Mapping[tuple[int, ...], np.ndarray], slot_std: float, length: int, *,
                     robust: bool = False) -> int | None:
    """Raise unless the sets agree within the bound; ``robust``: return the unique suspect instead."""
    std = math.sqrt(2.0) * slot_std
    tail = math.sqrt(2.0 * (math.log(2.0 * max(length, 1)) + AGREEMENT_FAILURE_BITS * math.log(2.0)))
    bound = std * tail
    sets = list(values)
    agree = {(a, b): float(np.abs(values[a] - values[b]).max()) <= bound for a in sets for b in sets}
    if all(agree.values()):
        return None
    members = sorted(set().union(*sets))
    # p is a candidate when the sets without p all agree: removing p explains every
    # disagreement. Name p only when it is the one candidate; with t+1 members every
    # member is one (one odd set is explained equally by any member in it).
    suspects = []
    for p in members:
        without = [s for s in sets if p not in s]
        if without and all(agree[(a, b)] for a in without for b in without):
            suspects.append(p)
    if len(suspects) == 1:
        if robust:
            return suspects[0]
        raise InconsistentShareError(
            f"member {suspects[0]}'s shares disagree with the other members beyond the noise bound "
            f"({bound:.3g}): it holds a wrong key share, altered its share, or misbehaves", suspects[0])
    raise InconsistentShareError(
        "the active sets disagree beyond the noise bound but the faulty member cannot be located "
        f"from these {len(members)} members; name every t-subset of at least t+2 members", None)


def run_keygen(parties: Sequence[KeygenParty], policy: Policy | None = None) -> list[KeyShare]:
    """Relay the dealer-free rounds among ``parties`` in one process (simulations and tests)."""
    first = [p.round1() for p in parties]
    second = [p.round2(first) for p in parties]
    third = [p.round3(second) for p in parties]
    return [p.finish(third, policy) for p in parties]


class Committee:
    """All n key shares and the public context, in one process (simulations, tests, demos)."""

    def __init__(self, context: PublicContext, key_shares: Sequence[KeyShare]) -> None:
        if [k.party for k in key_shares] != list(range(context.parties)):
            raise ValueError("key shares must be given for members 0 … n−1 in order")
        if any(k.context != context for k in key_shares):
            raise ValueError("every key share must belong to this committee")
        self.context = context
        self.key_shares = list(key_shares)

    @classmethod
    def generate(cls, n: int = 5, t: int = 3, params: Params = AGGREGATION, *, policy: Policy | None = None,
                 statistical_bits: int = 40, colluders: int | None = None) -> "Committee":
        """A trusted dealer in this process; its seeds are dropped, never returned."""
        return cls(*deal(params, n, t, policy=policy, statistical_bits=statistical_bits, colluders=colluders))

    @classmethod
    def dealer_free(cls, n: int = 5, t: int = 3, params: Params = AGGREGATION, *, policy: Policy | None = None,
                    statistical_bits: int = 40, colluders: int | None = None) -> "Committee":
        """Run the dealer-free rounds for n simulated members (each with its own identity)."""
        identities = [PartyIdentity.generate() for _ in range(n)]
        config = KeygenConfig.new(params, t, [i.public_key for i in identities], statistical_bits=statistical_bits,
                                  colluders=colluders)
        key_shares = run_keygen([KeygenParty(config, i, identity) for i, identity in enumerate(identities)], policy)
        return cls(key_shares[0].context, key_shares)

    @property
    def public_context(self) -> PublicContext:
        return self.context

    def __len__(self) -> int:
        return len(self.key_shares)

    def __iter__(self) -> Iterator[KeyShare]:
        return iter(self.key_shares)

    def __getitem__(self, party: int) -> KeyShare:
        return self.key_shares[party]

    def certify(self, request: DecryptionRequest, members: Sequence[int] | None = None, *,
                contributions: Mapping[str, Submission] | None = None) -> QuorumCertificate:
        """Approvals from ``members`` (default: the first q) as a quorum certificate."""
        context = self.context
        chosen = list(members) if members is not None else list(range(quorum_size(context.parties, context.colluders)))
        approvals: list[Approval] = [self.key_shares[i].approve(request, contributions=contributions) for i in chosen]
        return QuorumCertificate.collect(request.round_id, request.digest, approvals)

    def shares(self, request: DecryptionRequest, certificate: QuorumCertificate | None = None, *,
               contributions: Mapping[str, Submission] | None = None) -> list[DecryptionShare]:
        """Every share of every active set the request names (certifying it first if needed)."""
        if certificate is None:
            certificate = self.certify(request, contributions=contributions)
        return [self.key_shares[party].decryption_share(request, certificate, active, contributions=contributions)
                for active in request.active_sets for party in active]

    def decrypt(self, request: DecryptionRequest, *,
                contributions: Mapping[str, Submission] | None = None) -> np.ndarray:
        """Certify, collect every share and combine them (several active sets: cross-checked)."""
        return combine(request, self.shares(request, contributions=contributions))

    def __repr__(self) -> str:
        return f"Committee({self.context!r})"


def combine_enrolled(request: Any, c0_sum: np.ndarray, shares: Sequence[DecryptionShare | bytes], *,
                     robust: bool = False) -> Any:
    """The decrypted values of an enrolled round: Σc0 + Σ shares, decoded and cross-checked.

    ``c0_sum`` is the server's (count, L, N) sum; it must be the one whose digest the
    request (which every member approved) names. ``robust``: see :func:`combine_phase`.
    A DP request (``request.dp``) returns a :class:`~he_agg.dp.DPRelease` (values, ε, δ,
    noise std per value, excluded member).
    """
    return _combine_enrolled(request, c0_sum, shares, robust=robust, digest_checked=False)


def _combine_enrolled(request: Any, c0_sum: np.ndarray, shares: Sequence[DecryptionShare | bytes], *, robust: bool,
                      digest_checked: bool) -> Any:
    """:func:`combine_enrolled`; ``digest_checked``: the caller made the request from this very
    sum and has kept it unchanged since (the aggregator's closed round), so it is not hashed again."""
    from .enrolled import c0_digest
    from .hazmat.noise import EnrolledNoiseModel
    from .hazmat.wire.envelope import as_bytes, body_hash
    from .packing import Layout

    context = request.context
    params = context.params
    layout = Layout.from_json(request.layout)
    length = layout.length
    if layout.ciphertexts(params) != request.count:
        raise ShareBindingError(f"the request names {request.count} ciphertexts; its layout ({layout.packing} "
                                f"packing) needs {layout.ciphertexts(params)}")
    c0 = np.ascontiguousarray(c0_sum, dtype=np.uint64).reshape(request.count, len(params.data_moduli), params.n)
    if not digest_checked and c0_digest(params, length, body_hash(as_bytes(c0))) != request.aggregate_digest:
        raise ShareBindingError("this sum of c0 is not the one the request names")
    model = EnrolledNoiseModel(params, context.statistical_bits)
    out = combine_phase(request, c0, shares, length,
                        _with_dp(request, lambda sigma: model.slot_std(sigma, context.threshold, dense=layout.dense)),
                        packing=layout.packing, robust=robust)
    return out if request.dp is None else dp_released(out, request)
