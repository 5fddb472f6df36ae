"""he_agg: threshold-CKKS secure aggregation.

Enrolled-client mode is the way to use he_agg. Each client enrolls once per key epoch: it
shares its own secret with the committee's n members (one signed dealing, one signed ack
from every member). In every round it uploads only c0 — 32 bytes per value — with a
ticket signed by its enrolled key; an untrusted server sums the uploads with a native
kernel; a quorum of members approves the round's request τ_r (at most one per round),
and the request's active set answers it with flooded decryption shares. Only the
weighted mean (or sum) is released::

    from he_agg import EnrolledCommittee

    committee = EnrolledCommittee.generate(5, 3)                  # members with Ed25519 identities
    ctx = committee.public_context                                # EnrolledContext: ship ctx.to_bytes()
    clients = [committee.client(f"site-{i}") for i in range(6)]   # enrolment: dealing → acks
    agg = he_agg.Aggregator(ctx, round_id=1)                      # an EnrolledAggregator (epoch 0)
    for client, update in zip(clients, updates):
        agg.add(client.encrypt(update, round_id=1, weight=n_examples))   # bytes: c0 + signed ticket
    request = agg.decryption_request()                            # τ_r, bytes in and out
    shares = committee.shares(request)                            # approvals → certificate → shares
    mean = agg.finalize(shares)                                   # same structure as `update`

On separate machines each member is an :class:`EnrolledMember`: ``member.approve(request)``
returns an :class:`Approval`; :meth:`QuorumCertificate.collect` gathers q of them;
``member.decryption_share(request, certificate)`` answers.

Public-key mode stays for clients that must use unmodified TenSEAL: they encrypt under the
committee's collective public key (it trusts clients to encrypt honestly — see
docs/SECURITY.md)::

    committee = he_agg.Committee.dealer_free(n=5, t=3)
    ctx = committee.public_context
    enc = he_agg.encrypt(ctx, update, weight=n_examples, client_id="site-7", round_id=3)
    agg = he_agg.Aggregator(ctx, round_id=3)
    agg.add(enc)  # ... one per client
    request = agg.decryption_request(active_sets=[[0, 2, 4]])
    approvals = [committee[i].approve(request, contributions=agg.contributions) for i in range(4)]
    cert = he_agg.QuorumCertificate.collect(request.round_id, request.digest, approvals)
    shares = [committee[i].decryption_share(request, cert, contributions=agg.contributions) for i in (0, 2, 4)]
    mean = agg.finalize(shares)

The data flow, module by module: params → enrollment / member (enrolled keys) or keygen /
keyshare (public-key mode) → context → packing / enrolled / client (clients) → hazmat.wire
(wire) → hazmat.kernels (kernel) → requests / quorum / committee (threshold) → aggregator.
Low-level building blocks live in :mod:`he_agg.hazmat`.
"""

from __future__ import annotations

from . import errors, packing, stats
from .aggregator import AggregateResult, Aggregator, EnrolledAggregator
from .ciphertext import CiphertextBatch
from .client import EncryptedUpdate, encrypt
from .committee import Committee, combine, combine_enrolled, run_keygen, verification_sets
from .context import EnrolledContext, PublicContext
from .enrolled import EnrolledClient, EnrolledUpload
from .identity import PartyIdentity
from .keygen import KeygenConfig, KeygenParty
from .keyshare import KeyShare, Policy
from .member import EnrolledCommittee, EnrolledMember, EnrolledPolicy
from .params import AGGREGATION, ENROLLED, Params
from .quorum import Approval, QuorumCertificate, quorum_size
from .requests import Contribution, DecryptionRequest, DecryptionShare, EnrolledRequest

__version__ = "0.1.0"

__all__ = [
    "AGGREGATION",
    "AggregateResult",
    "Aggregator",
    "Approval",
    "CiphertextBatch",
    "Committee",
    "Contribution",
    "DecryptionRequest",
    "DecryptionShare",
    "ENROLLED",
    "EncryptedUpdate",
    "EnrolledAggregator",
    "EnrolledClient",
    "EnrolledCommittee",
    "EnrolledContext",
    "EnrolledMember",
    "EnrolledPolicy",
    "EnrolledRequest",
    "EnrolledUpload",
    "KeyShare",
    "KeygenConfig",
    "KeygenParty",
    "PartyIdentity",
    "Params",
    "Policy",
    "PublicContext",
    "QuorumCertificate",
    "__version__",
    "combine",
    "combine_enrolled",
    "encrypt",
    "errors",
    "packing",
    "quorum_size",
    "run_keygen",
    "stats",
    "verification_sets",
]
