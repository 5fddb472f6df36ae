"""he_agg: threshold-CKKS secure aggregation.

Clients encrypt with TenSEAL under a committee's public key; an untrusted server sums
the ciphertexts with a native kernel; any t of the committee's n members decrypt only the
sum, flooded with noise so the decryption reveals nothing else. A decryption takes two
steps: a quorum of members approves the request (each member at most one per round),
then the request's active set answers against that quorum certificate::

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

The data flow, module by module: params → keygen / keyshare / context (keys) →
packing / client (packing) → ciphertext and hazmat.wire (wire) → hazmat.kernels
(kernel) → requests / committee (threshold) → aggregator → integrations.
Low-level building blocks live in :mod:`he_agg.hazmat`.
"""

from __future__ import annotations

from . import errors, packing, stats
from .aggregator import AggregateResult, Aggregator
from .ciphertext import CiphertextBatch
from .client import EncryptedUpdate, encrypt
from .committee import Committee, combine, run_keygen, verification_sets
from .context import PublicContext
from .identity import PartyIdentity
from .keygen import KeygenConfig, KeygenParty
from .keyshare import KeyShare, Policy
from .params import AGGREGATION, Params
from .quorum import Approval, QuorumCertificate, quorum_size
from .requests import Contribution, DecryptionRequest, DecryptionShare

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
    "EncryptedUpdate",
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
    "encrypt",
    "errors",
    "packing",
    "quorum_size",
    "run_keygen",
    "stats",
    "verification_sets",
]
