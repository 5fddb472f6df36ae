"""Enrolled-client mode as a framework author uses it: structures and weights through a round,
statistics encoders, every wire object through bytes, and a member's save/load round trip.

Everything goes through the public names exported by ``he_agg``. The committee is shared
by the module; each test uses its own round ids (a member approves one τ per round, a
client uploads once per round).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import nacl.pwhash.argon2id as argon2id
import numpy as np
import pytest

import he_agg
from he_agg import stats
from he_agg.enrolled import EnrolledUpload, Ticket
from he_agg.errors import AuthenticationError, FormatError, HeAggError, ShareBindingError
from he_agg.hazmat import files
from he_agg.hazmat.noise import EnrolledNoiseModel

CLIENTS = 5


@pytest.fixture(scope="module")
def committee() -> he_agg.EnrolledCommittee:
    return he_agg.EnrolledCommittee.generate(5, 3)


@pytest.fixture(scope="module")
def clients(committee: he_agg.EnrolledCommittee) -> list[he_agg.EnrolledClient]:
    return [committee.client(f"site-{k}") for k in range(CLIENTS)]


def _round(committee: he_agg.EnrolledCommittee, clients: Sequence[he_agg.EnrolledClient], updates: Sequence[Any],
           round_id: int, weights: Sequence[float] | None = None) -> tuple[Any, he_agg.EnrolledAggregator]:
    agg = he_agg.Aggregator(committee.public_context, round_id=round_id)
    assert isinstance(agg, he_agg.EnrolledAggregator)
    for k, (client, update) in enumerate(zip(clients, updates)):
        agg.add(client.encrypt(update, round_id=round_id, weight=None if weights is None else weights[k]))
    request = agg.decryption_request()
    return agg.finalize(committee.shares(request)), agg


def _bound(committee: he_agg.EnrolledCommittee, agg: he_agg.EnrolledAggregator) -> float:
    """EnrolledNoiseModel.error_bound for this round's decrypted slots (each one a sum)."""
    ctx = committee.public_context
    model = EnrolledNoiseModel(ctx.params, ctx.statistical_bits)
    assert agg.layout is not None
    return model.error_bound(committee[0].sigma, ctx.threshold, len(agg.contributors), agg.layout.length)


def _mean_bound(slot_bound: float, total_weight: float, mean: np.ndarray) -> float:
    """|S'/W' − S/W| ≤ ε(1 + |S/W|)/(W − ε) when S and W are each decrypted within ε."""
    return slot_bound * (1.0 + float(np.abs(mean).max())) / (total_weight - slot_bound)


def test_dict_of_arrays_weighted_mean(committee: he_agg.EnrolledCommittee, clients: list[he_agg.EnrolledClient]) -> None:
    rng = np.random.default_rng(1)
    updates = [{"layer1.weight": rng.uniform(-1, 1, (4, 3)), "layer1.bias": rng.uniform(-1, 1, 3),
                "scale": rng.uniform(-1, 1, (1,))} for _ in clients]
    weights = [12.0, 3.0, 40.0, 7.5, 1.0]
    mean, agg = _round(committee, clients, updates, 101, weights)
    assert set(mean) == set(updates[0])
    assert agg.result is not None and agg.result.contributors == tuple(c.client_id for c in clients)
    bound = _bound(committee, agg)
    assert 0 < bound < 1e-6
    assert abs(agg.result.total_weight - sum(weights)) <= bound
    for name, value in mean.items():
        expected = np.average([u[name] for u in updates], axis=0, weights=weights)
        assert value.shape == expected.shape
        assert np.abs(value - expected).max() <= _mean_bound(bound, sum(weights), expected), name


def test_list_of_arrays_weighted_mean(committee: he_agg.EnrolledCommittee, clients: list[he_agg.EnrolledClient]) -> None:
    rng = np.random.default_rng(2)
    updates = [[rng.uniform(-3, 3, 5000), rng.uniform(-1, 1, (2, 2))] for _ in clients]  # two ciphertexts
    weights = [1.0, 2.0, 3.0, 4.0, 5.0]
    mean, agg = _round(committee, clients, updates, 102, weights)
    assert isinstance(mean, list) and len(mean) == 2
    bound = _bound(committee, agg)
    for value, parts in zip(mean, zip(*updates)):
        expected = np.average(np.stack(parts), axis=0, weights=weights)
        assert value.shape == expected.shape
        assert np.abs(value - expected).max() <= _mean_bound(bound, sum(weights), expected)


def test_unweighted_round_releases_the_sum(committee: he_agg.EnrolledCommittee,
                                           clients: list[he_agg.EnrolledClient]) -> None:
    updates = [np.full(7, float(k)) for k in range(CLIENTS)]
    total, agg = _round(committee, clients, updates, 103)
    assert agg.result is not None and agg.result.total_weight is None
    assert np.abs(total - sum(range(CLIENTS))).max() <= _bound(committee, agg)


def test_moments_and_histogram_through_enrolled_mode(committee: he_agg.EnrolledCommittee,
                                                     clients: list[he_agg.EnrolledClient]) -> None:
    rng = np.random.default_rng(3)
    columns = [rng.normal(14.0, 3.5, int(n)).clip(0, 40) for n in rng.integers(20, 120, CLIENTS)]
    moments, histogram = stats.Moments(0.0, 40.0), stats.Histogram(tuple(np.arange(5.0, 31.0, 2.5).tolist()))
    queries = [np.concatenate([moments.encode(c), histogram.encode(c)]) for c in columns]
    summed, agg = _round(committee, clients, queries, 104)
    m, h = moments.decode(summed[: moments.length]), histogram.decode(summed[moments.length :])
    pooled = np.concatenate(columns)
    assert m.count == pooled.size
    assert abs(m.mean - pooled.mean()) < 1e-9
    assert abs(m.sample_variance - pooled.var(ddof=1)) < 1e-6
    expected_counts, _ = np.histogram(pooled[(pooled >= 5.0) & (pooled < 30.0)], bins=np.arange(5.0, 31.0, 2.5))
    assert h.counts.tolist() == expected_counts.tolist()


def test_every_enrolled_wire_object_through_bytes(committee: he_agg.EnrolledCommittee,
                                                  clients: list[he_agg.EnrolledClient]) -> None:
    ctx = committee.public_context
    # the context, as clients and the server receive it
    wire = ctx.to_bytes()
    received = he_agg.EnrolledContext.from_bytes(wire, he_agg.ENROLLED)
    assert received == ctx and received.committee_id == ctx.committee_id and received.roster == ctx.roster
    assert received.to_bytes() == wire
    with pytest.raises(FormatError):
        he_agg.EnrolledContext.from_bytes(he_agg.Committee.generate(3, 2).public_context.to_bytes())

    # uploads: bytes → EnrolledUpload → the same bytes; the ticket on its own too
    rng = np.random.default_rng(4)
    updates = [rng.uniform(-1, 1, 300) for _ in clients]
    blobs = [c.encrypt(u, round_id=105, weight=2.0) for c, u in zip(clients, updates)]
    upload = EnrolledUpload.from_bytes(blobs[0], ctx.params, ctx.committee_id, verify_key=clients[0].public_key,
                                       epoch=0, round_id=105)
    assert upload.client_id == "site-0" and upload.to_bytes() == blobs[0]
    assert Ticket.from_bytes(upload.ticket.to_bytes()) == upload.ticket
    upload.ticket.verify(clients[0].public_key, committee_id=ctx.committee_id, round_id=105)
    assert clients[0].resend(105) == blobs[0]  # a retry resends the identical bytes

    agg = he_agg.Aggregator(received, round_id=105)
    for blob in blobs:
        agg.add(blob)

    # τ_r, approvals, the certificate and shares, each through bytes
    request_bytes = agg.decryption_request().to_bytes()
    request = he_agg.EnrolledRequest.from_bytes(request_bytes, ctx)
    assert request.digest == agg.decryption_request().digest and request.to_bytes() == request_bytes
    assert request.contributors == tuple(sorted(c.client_id for c in clients))
    q = he_agg.quorum_size(ctx.parties, ctx.colluders)
    approvals = [committee[i].approve(he_agg.EnrolledRequest.from_bytes(request_bytes, ctx)).to_bytes()
                 for i in range(q)]
    parsed = [he_agg.Approval.from_bytes(a) for a in approvals]
    assert [a.member for a in parsed] == list(range(q)) and all(a.request_digest == request.digest for a in parsed)
    certificate = he_agg.QuorumCertificate.collect(request.round_id, request.digest, approvals)
    cert_bytes = certificate.to_bytes()
    assert he_agg.QuorumCertificate.from_bytes(cert_bytes) == certificate
    certificate.check(ctx.roster, ctx.committee_id, ctx.colluders, request.round_id, request.digest)
    shares = [committee[i].decryption_share(request, cert_bytes).to_bytes() for i in request.active_sets[0]]
    for raw in shares:
        share = he_agg.DecryptionShare.from_bytes(raw, ctx)
        assert share.request_digest == request.digest and share.to_bytes() == raw
    mean = agg.finalize(shares)  # bytes in
    bound = _bound(committee, agg)
    expected = np.mean(updates, axis=0)
    assert np.abs(mean - expected).max() <= _mean_bound(bound, 2.0 * CLIENTS, expected)

    # a wrong committee's context refuses each of them
    other = he_agg.EnrolledCommittee.generate(5, 3).public_context
    with pytest.raises(ShareBindingError):
        he_agg.EnrolledRequest.from_bytes(request_bytes, other)
    with pytest.raises(ShareBindingError):
        he_agg.DecryptionShare.from_bytes(shares[0], other)
    with pytest.raises(HeAggError):
        EnrolledUpload.from_bytes(blobs[0], other.params, other.committee_id, verify_key=None)


@pytest.fixture
def fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2id at its minimum cost: the file format is the same, the test is fast."""
    monkeypatch.setattr(files, "_KDF_OPS", argon2id.OPSLIMIT_MIN)
    monkeypatch.setattr(files, "_KDF_MEM", argon2id.MEMLIMIT_MIN * 8)


def test_member_save_load_answers_identically(tmp_path: Path, fast_kdf: None) -> None:
    committee = he_agg.EnrolledCommittee.generate(5, 3)
    ctx = committee.public_context
    passphrase = b"correct horse battery staple"
    paths = [tmp_path / f"member-{m.index}.key" for m in committee]
    for member, path in zip(committee, paths):
        member.save(path, passphrase=passphrase)  # right after creation: registry and approvals go to path.state
    assert paths[0].stat().st_mode & 0o777 == 0o600
    assert passphrase not in paths[0].read_bytes()
    clients = [committee.client(f"clinic-{k}") for k in range(3)]
    agg = he_agg.Aggregator(ctx, round_id=7)
    for k, client in enumerate(clients):
        agg.add(client.encrypt(np.full(10, k + 1.0), round_id=7))
    request = agg.decryption_request()
    certificate = committee.certify(request)
    answers = {i: committee[i].decryption_share(request, certificate).to_bytes() for i in request.active_sets[0]}

    for i, answer in answers.items():
        loaded = he_agg.EnrolledMember.load(paths[i], ctx, passphrase=passphrase)
        assert loaded.index == i and loaded.policy == committee[i].policy
        assert loaded.enrollment.enrolled(0) == sorted(c.client_id for c in clients)
        assert loaded.spent(0) == committee[i].spent(0)  # the budget survived
        assert loaded.approve(request).signature == committee[i].approve(request).signature
        assert loaded.decryption_share(request, certificate.to_bytes()).to_bytes() == answer
        assert loaded.spent(0) == committee[i].spent(0)  # the repeat was free
        assert "passphrase" not in repr(loaded) and "key" not in repr(loaded).lower()
    assert np.abs(agg.finalize(list(answers.values())) - 6.0).max() < 1e-6

    with pytest.raises(AuthenticationError):
        he_agg.EnrolledMember.load(paths[0], ctx, passphrase=b"wrong")
    with pytest.raises(ShareBindingError):
        he_agg.EnrolledMember.load(paths[0], he_agg.EnrolledCommittee.generate(5, 3).public_context,
                                   passphrase=passphrase)


def test_exports_and_docstring() -> None:
    for name in ("EnrolledCommittee", "EnrolledMember", "EnrolledPolicy", "EnrolledClient", "EnrolledContext",
                 "EnrolledRequest", "EnrolledAggregator", "ENROLLED"):
        assert name in he_agg.__all__ and hasattr(he_agg, name), name
    doc = he_agg.__doc__ or ""
    assert doc.index("EnrolledCommittee.generate") < doc.index("Committee.dealer_free")  # enrolled mode first
    assert math.log2(he_agg.ENROLLED.scale) == 94


def test_a_client_hashes_its_upload_once(committee: he_agg.EnrolledCommittee,
                                        clients: list[he_agg.EnrolledClient],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The ticket signs c0's digest and the envelope's checksum reuses it: the residues are
    hashed once on the client, and the bytes still open (checksum and ticket verified)."""
    import types

    import blake3

    from he_agg.enrolled import EnrolledUpload
    from he_agg.hazmat.wire import digest, envelope

    hashed: list[int] = []

    def counting(data: object = b"", **kw: object) -> object:
        hashed.append(memoryview(data).nbytes)  # type: ignore[arg-type]
        return blake3.blake3(data, **kw)  # type: ignore[arg-type]

    for module in (digest, envelope):
        monkeypatch.setattr(module, "blake3", types.SimpleNamespace(blake3=counting))
    blob = clients[4].encrypt(np.full(20_000, 0.5), round_id=9002, packing="dense")
    monkeypatch.undo()
    body = len(envelope.open_envelope(blob, envelope.Kind.ENROLLED_UPLOAD, "upload").body)
    assert [h for h in hashed if h >= body] == [body]
    ctx = committee.context
    EnrolledUpload.from_bytes(blob, ctx.params, ctx.committee_id, verify_key=clients[4].public_key)


def test_each_upload_is_opened_and_hashed_once(committee: he_agg.EnrolledCommittee,
                                               clients: list[he_agg.EnrolledClient],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """The server reads every upload's body once with the hash (the first upload too, whose
    layout sizes the round), inside the summing pass: hashing is the largest cost of a
    server round. Every byte hashed, anywhere, is counted."""
    import types

    import blake3

    from he_agg.hazmat import kernels
    from he_agg.hazmat.wire import digest, envelope

    blobs = [client.encrypt(np.full(300, 0.25), round_id=9001) for client in clients[:3]]
    bodies = [len(envelope.open_envelope(b, envelope.Kind.ENROLLED_UPLOAD, "upload").body) for b in blobs]
    hashed: list[int] = []

    def counting(data: object = b"", **kw: object) -> object:
        hashed.append(memoryview(data).nbytes)  # type: ignore[arg-type]
        return blake3.blake3(data, **kw)  # type: ignore[arg-type]

    for module in (digest, envelope):  # every hash of a body goes through wire.digest
        monkeypatch.setattr(module, "blake3", types.SimpleNamespace(blake3=counting))
    fused: list[int] = []
    real_sum = kernels.sum_hashed
    monkeypatch.setattr(kernels, "sum_hashed", lambda *a: fused.append(1) or real_sum(*a))
    agg = he_agg.Aggregator(committee.public_context, round_id=9001)
    for blob in blobs:
        agg.add(blob)
    assert agg.contributors == tuple(c.client_id for c in clients[:3])
    assert len(fused) == 3  # each body hashed in the pass that sums it
    big = [h for h in hashed if h >= min(bodies)]  # the rest: headers, metas, 32-byte digests
    assert sorted(big) == sorted(bodies), (big, bodies)
