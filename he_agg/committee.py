"""The decryption committee: key generation, and combining shares into the released values.

:class:`Committee` is a convenience for one process (simulations, tests, the demo): it
holds every key share. Real deployments give each :class:`~he_agg.keyshare.KeyShare` to
a different party and call :func:`combine` wherever the shares are collected.

:func:`combine` needs no secret. Given shares for one complete active set it decrypts.
Given shares for several active sets (more than t parties answered, e.g. from
:func:`verification_sets`) it also cross-checks:

* each party's shares for different sets must be *self-consistent* (see
  :func:`he_agg.hazmat.decryption.self_consistency_residual`): a share altered after it
  was made is caught and its party named;
* the sets must *agree* within the flooding-noise bound. When they do not, the party
  present in every disagreeing set and absent from the agreeing ones is named. With
  only t+1 parties, a party holding a wrong key share cannot be located (any t of the
  t+1 points fit a polynomial of degree t−1): the error says so; ask t+2 parties.
"""

from __future__ import annotations

import itertools
from typing import Iterator, Mapping, Sequence

import numpy as np

from .ciphertext import Submission
from .context import PublicContext
from .errors import InconsistentShareError, ShareBindingError, ThresholdError
from .hazmat.decryption import decode_phase, phase, self_consistency_residual
from .hazmat.sampling import GAUSSIAN_MAX, dither_shift
from .keygen import KeygenConfig, KeygenParty, PartyIdentity, deal
from .keyshare import KeyShare, Policy
from .params import AGGREGATION, Params
from .requests import DecryptionRequest, DecryptionShare

__all__ = ["Committee", "combine", "verification_sets"]

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


def combine(request: DecryptionRequest, shares: Sequence[DecryptionShare | bytes]) -> np.ndarray:
    """The decrypted values (float64, ``request.aggregate.length``) from decryption shares."""
    context = request.context
    groups = _group(request, [_parse(s, context) for s in shares])
    complete = {active: group for active, group in groups.items() if set(group) == set(active)}
    if not complete:
        have = {active: sorted(group) for active, group in groups.items()}
        raise ThresholdError(f"no active set has all {context.threshold} shares; received {have or 'none'}")
    values = {active: _decrypt(request, group) for active, group in complete.items()}
    if len(values) > 1:
        _check_self_consistency(request, complete)
        _check_agreement(request, values)
    return np.mean(np.stack(list(values.values())), axis=0)


def _parse(share: DecryptionShare | bytes, context: PublicContext) -> DecryptionShare:
    return share if isinstance(share, DecryptionShare) else DecryptionShare.from_bytes(share, context)


def _group(request: DecryptionRequest, shares: list[DecryptionShare]) -> dict[tuple[int, ...], dict[int, DecryptionShare]]:
    context, params = request.context, request.context.params
    shape = (request.aggregate.count, len(params.data_moduli), params.n)
    groups: dict[tuple[int, ...], dict[int, DecryptionShare]] = {}
    for share in shares:
        if share.committee_id != context.committee_id:
            raise ShareBindingError(f"the share of party {share.party} was made by another committee")
        if share.request_digest != request.digest:
            raise ShareBindingError(f"the share of party {share.party} was made for another request or ciphertext")
        if share.residues.shape != shape:
            raise ShareBindingError(f"the share of party {share.party} has shape {share.residues.shape}, expected {shape}")
        if len(share.active) != context.threshold:
            raise ShareBindingError(f"the share of party {share.party} names {len(share.active)} parties, not t")
        group = groups.setdefault(share.active, {})
        earlier = group.get(share.party)
        if earlier is not None and not np.array_equal(earlier.residues, share.residues):
            raise InconsistentShareError(
                f"party {share.party} sent two different shares for the active set {list(share.active)}",
                share.party)
        group[share.party] = share
    return groups


def _decrypt(request: DecryptionRequest, group: Mapping[int, DecryptionShare]) -> np.ndarray:
    params = request.context.params
    aggregate = request.aggregate
    summed = phase(np.ascontiguousarray(aggregate.data[:, 0]), [s.residues for s in group.values()], params)
    return decode_phase(summed, params).reshape(-1)[: aggregate.length]


def _sigma(request: DecryptionRequest) -> float:
    params = request.context.params
    return request.context.noise_model().flooding_sigma(request.summed, request.aggregate.count * params.n)


def _check_self_consistency(request: DecryptionRequest, complete: Mapping[tuple[int, ...], Mapping[int, DecryptionShare]]) -> None:
    params = request.context.params
    sigma = _sigma(request)
    max_noise = (GAUSSIAN_MAX + 1e-9) * sigma + 2.0 ** dither_shift(sigma)  # |σ·z| + rounding + dither
    by_party: dict[int, list[DecryptionShare]] = {}
    for group in complete.values():
        for party, share in group.items():
            by_party.setdefault(party, []).append(share)
    failing = []
    for party, own in sorted(by_party.items()):
        first = own[0]
        for other in own[1:]:
            residual, multiplier = self_consistency_residual(
                first.residues, first.active, other.residues, other.active, party, params)
            bound = multiplier * max_noise
            if bound >= params.data_modulus / 4:  # the check cannot be evaluated exactly: skip
                continue
            if residual > bound:
                failing.append(party)
                break
    if failing:
        raise InconsistentShareError(
            f"the shares of party {failing[0]} contradict each other: a share was altered after it was made"
            + (f" (also parties {failing[1:]})" if len(failing) > 1 else ""), failing[0])


def _check_agreement(request: DecryptionRequest, values: Mapping[tuple[int, ...], np.ndarray]) -> None:
    context, params = request.context, request.context.params
    bound = context.noise_model().agreement_bound(
        request.summed, request.aggregate.count * params.n, context.threshold, request.aggregate.length)
    sets = list(values)
    agree = {(a, b): float(np.abs(values[a] - values[b]).max()) <= bound for a in sets for b in sets}
    if all(agree.values()):
        return
    parties = sorted(set().union(*sets))
    suspects = []
    for p in parties:
        inside = [s for s in sets if p in s]
        outside = [s for s in sets if p not in s]
        if outside and all(agree[(a, b)] for a in outside for b in outside) and \
                all(not agree[(a, b)] for a in inside for b in outside):
            suspects.append(p)
    if len(suspects) == 1:
        raise InconsistentShareError(
            f"party {suspects[0]}'s shares disagree with the other parties beyond the noise bound "
            f"({bound:.3g}): it holds a wrong key share or misbehaves", suspects[0])
    raise InconsistentShareError(
        "the active sets disagree beyond the noise bound but the faulty party cannot be located "
        f"from these {len(parties)} parties; collect shares from at least t+2 parties", None)


class Committee:
    """All n key shares and the public context, in one process (simulations, tests, demos)."""

    def __init__(self, context: PublicContext, key_shares: Sequence[KeyShare]) -> None:
        if [k.party for k in key_shares] != list(range(context.parties)):
            raise ValueError("key shares must be given for parties 0 … n−1 in order")
        if any(k.context != context for k in key_shares):
            raise ValueError("every key share must belong to this committee")
        self.context = context
        self.key_shares = list(key_shares)

    @classmethod
    def generate(cls, n: int = 5, t: int = 3, params: Params = AGGREGATION, *, policy: Policy | None = None,
                 statistical_bits: int = 40) -> "Committee":
        """A trusted dealer in this process; its secret is wiped, never returned."""
        return cls(*deal(params, n, t, policy=policy, statistical_bits=statistical_bits))

    @classmethod
    def dealer_free(cls, n: int = 5, t: int = 3, params: Params = AGGREGATION, *, policy: Policy | None = None,
                    statistical_bits: int = 40) -> "Committee":
        """Run the dealer-free rounds for n simulated parties (each with its own identity)."""
        identities = [PartyIdentity.generate() for _ in range(n)]
        config = KeygenConfig.new(params, t, [i.public_key for i in identities], statistical_bits=statistical_bits)
        parties = [KeygenParty(config, i, identity) for i, identity in enumerate(identities)]
        messages = [p.round1() for p in parties]
        key_shares = [p.finish(messages, policy) for p in parties]
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

    def shares(self, request: DecryptionRequest, parties: Sequence[int] | None = None, *,
               contributions: Mapping[str, Submission] | None = None) -> list[DecryptionShare]:
        """Shares from ``parties`` (default: the first t) for every t-subset of them."""
        chosen = list(parties) if parties is not None else list(range(self.context.threshold))
        out = []
        for active in verification_sets(chosen, self.context.threshold):
            for party in active:
                out.append(self.key_shares[party].decryption_share(request, active, contributions=contributions))
        return out

    def decrypt(self, request: DecryptionRequest, parties: Sequence[int] | None = None, *,
                contributions: Mapping[str, Submission] | None = None) -> np.ndarray:
        """Collect shares from ``parties`` (more than t: cross-checked) and combine them."""
        return combine(request, self.shares(request, parties, contributions=contributions))

    def __repr__(self) -> str:
        return f"Committee({self.context!r})"
