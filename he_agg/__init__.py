"""he_agg: threshold-CKKS secure aggregation.

Clients encrypt with TenSEAL under a committee's public key; an untrusted server sums
the ciphertexts with a native kernel; any t of the committee's n members decrypt only the
sum, flooded with noise so the decryption reveals nothing else::

    committee = he_agg.Committee.dealer_free(n=5, t=3)
    ctx = committee.public_context
    enc = he_agg.encrypt(ctx, update, weight=n_examples, client_id="site-7", round_id=3)
    agg = he_agg.Aggregator(ctx, round_id=3, min_clients=3)
    agg.add(enc)
    request = agg.decryption_request()
    shares = [committee[i].decryption_share(request, active=[0, 2, 4]) for i in (0, 2, 4)]
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
from .committee import Committee, combine
from .context import PublicContext
from .keygen import KeygenConfig, KeygenParty, PartyIdentity
from .keyshare import KeyShare, Policy
from .params import AGGREGATION, Params
from .requests import Contribution, DecryptionRequest, DecryptionShare

__version__ = "0.1.0"

__all__ = [
    "AGGREGATION",
    "AggregateResult",
    "Aggregator",
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
    "__version__",
    "combine",
    "encrypt",
    "errors",
    "packing",
    "stats",
]
