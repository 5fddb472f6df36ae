"""Enrolled-client mode, piece by piece: client encryption (with and without its durable
round record) beside TenSEAL's, the server's add, a member's approval and share, combine.

Run:  pytest benchmarks/bench_enrolled.py --benchmark-enable -p no:cacheprovider

65,536 values (16 ciphertexts), a 3-of-5 committee, 20 enrolled clients. No assertions on
time; the full-size comparison is ``he-agg bench e2e --clients 100 --values 1048576``.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
import tenseal as ts

import he_agg
from he_agg.bench import common
from he_agg.enrolled import enrolled_upload, secret_ntt
from he_agg.params import ENROLLED

VALUES, CLIENTS = 1 << 16, 20


@pytest.fixture(scope="module")
def setup() -> dict[str, Any]:
    committee = he_agg.EnrolledCommittee.generate(5, 3)
    clients = [committee.client(f"c{k}") for k in range(CLIENTS)]
    plain = np.linspace(-1.0, 1.0, VALUES)
    agg = he_agg.Aggregator(committee.public_context, round_id=1)
    uploads = [c.encrypt(plain, round_id=1) for c in clients]
    for blob in uploads:
        agg.add(blob)
    request = agg.decryption_request()
    certificate = committee.certify(request)
    shares = committee.shares(request, certificate)
    return {"committee": committee, "clients": clients, "plain": plain, "uploads": uploads, "agg": agg,
            "request": request, "certificate": certificate, "shares": shares}


def _bare_client(ctx: he_agg.EnrolledContext) -> dict[str, Any]:
    """A bare identity and secret (what an EnrolledClient holds), to time encryption without its record."""
    from he_agg.enrollment import ClientEnrollment, CommitteeInfo

    identity = he_agg.PartyIdentity.generate()
    info = CommitteeInfo(ctx.committee_id, ctx.roster, ctx.threshold, ctx.params.n)
    enrollment = ClientEnrollment.create(identity, "bench", info, 0)
    return {"identity": identity, "secret": secret_ntt(enrollment.secret_coefficients(), ctx.params)}


def test_tenseal_encrypt(benchmark: Any, setup: dict[str, Any]) -> None:
    ctx = common.tenseal_context(ENROLLED)
    values = setup["plain"].tolist()
    with common.quiet_stdout():
        benchmark(lambda: ts.ckks_vector(ctx, values).serialize())


def test_client_encrypt(benchmark: Any, setup: dict[str, Any]) -> None:
    """EnrolledClient.encrypt as users call it: one fresh round per call (record stored first)."""
    client, rounds = setup["clients"][0], itertools.count(1000)
    benchmark(lambda: client.encrypt(setup["plain"], round_id=next(rounds)))


def test_client_encrypt_without_record(benchmark: Any, setup: dict[str, Any]) -> None:
    """The same upload without the round record: encoding, noise, a·s, ticket, envelope."""
    ctx = setup["committee"].public_context
    client = _bare_client(ctx)
    rounds = itertools.count(10_000)
    benchmark(lambda: enrolled_upload(client["identity"], client["secret"], setup["plain"], client_id="bench",
                                      committee_id=ctx.committee_id, epoch=0, round_id=next(rounds),
                                      params=ctx.params).to_bytes())


def test_server_add(benchmark: Any, setup: dict[str, Any]) -> None:
    """Validate one upload and add its c0 (a fresh aggregator per run: ids are per round)."""
    ctx = setup["committee"].public_context

    def add() -> None:
        agg = he_agg.Aggregator(ctx, round_id=1)
        agg.add(setup["uploads"][0])

    benchmark(add)


def test_member_approve(benchmark: Any, setup: dict[str, Any]) -> None:
    """Registry and ticket checks for 20 contributors, then the stored signature (a repeat)."""
    benchmark(setup["committee"][0].approve, setup["request"])


def test_member_share(benchmark: Any, setup: dict[str, Any]) -> None:
    """Certificate check, sub-secret expansion for 20 clients, round polynomials, flooding, a·σ + f."""
    benchmark(setup["committee"][0].decryption_share, setup["request"], setup["certificate"])


def test_combine(benchmark: Any, setup: dict[str, Any]) -> None:
    benchmark(setup["agg"].finalize, setup["shares"])
