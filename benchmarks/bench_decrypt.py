"""Committee decryption vs TenSEAL's single-key decryption of the same ciphertexts.

Run:  pytest benchmarks/bench_decrypt.py --benchmark-enable -p no:cacheprovider

65,536 values (16 ciphertexts), a 3-of-5 committee holding replicated shares of the
TenSEAL context's own key (the benchmark's trusted dealer, see he_agg.bench.decrypt).
A decryption is an approval by a quorum (each member recomputes the aggregate and signs)
and then a share per active member against the quorum certificate. No assertions on
time; the full-size comparison is ``he-agg bench decrypt --values 1048576``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tenseal as ts

from he_agg.bench import common
from he_agg.bench.decrypt import _committee_from_tenseal
from he_agg.ciphertext import CiphertextBatch
from he_agg.committee import combine
from he_agg.hazmat.decryption import flooding_noise
from he_agg.hazmat.sampling import KeyedStream
from he_agg.params import AGGREGATION
from he_agg.quorum import QuorumCertificate, quorum_size
from he_agg.requests import Contribution, DecryptionRequest

VALUES, ACTIVE = 1 << 16, (0, 1, 2)


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    ctx = common.tenseal_context(AGGREGATION)
    plain = np.linspace(-1.0, 1.0, VALUES)
    with common.quiet_stdout():
        vector = ts.ckks_vector(ctx, plain.tolist())
    batch = CiphertextBatch.from_tenseal(vector, AGGREGATION)
    context, keys = _committee_from_tenseal(ctx, 5, 3)
    request = DecryptionRequest(context, 0, batch, [Contribution("bench", batch.digest)], active_sets=[ACTIVE])
    submissions = {"bench": batch.to_bytes()}
    approvals = [keys[p].approve(request, contributions=submissions)
                 for p in range(quorum_size(context.parties, context.colluders))]
    certificate = QuorumCertificate.collect(request.round_id, request.digest, approvals)
    shares = [keys[p].decryption_share(request, certificate, ACTIVE) for p in ACTIVE]
    return {"vector": vector, "keys": keys, "request": request, "shares": shares, "batch": batch,
            "certificate": certificate, "submissions": submissions}


def test_tenseal_decrypt(benchmark: Any, setup: dict[str, Any]) -> None:
    benchmark(setup["vector"].decrypt)


def test_approval(benchmark: Any, setup: dict[str, Any]) -> None:
    """One member's approval: recompute the aggregate from the submission, sign (a repeat re-sends)."""
    benchmark(setup["keys"][0].approve, setup["request"], contributions=setup["submissions"])


def test_decryption_share(benchmark: Any, setup: dict[str, Any]) -> None:
    """One member's share: certificate check, flooding noise, forward NTT, σ·c1 + e (recomputed, no budget)."""
    benchmark(setup["keys"][0].decryption_share, setup["request"], setup["certificate"], ACTIVE)


def test_flooding_noise(benchmark: Any, setup: dict[str, Any]) -> None:
    benchmark(lambda: flooding_noise(KeyedStream.fresh(), setup["batch"].count, 2.0**48, AGGREGATION))


def test_combine(benchmark: Any, setup: dict[str, Any]) -> None:
    """c0 + Σ shares, inverse NTT, exact CRT, SEAL slot-order decoding."""
    benchmark(combine, setup["request"], setup["shares"])
