"""Fuzz targets: every parser of bytes from another party, with valid seeds.

Each target is built by a function returning a :class:`Target`: the valid objects that
seed its corpus and ``parse(bytes)``, which may accept an input or raise a
:class:`~he_agg.errors.HeAggError` — any other exception is a finding.

For envelope targets (``envelope=True``) the harness reads the first input byte as a
mode: odd → the rest is an he_agg envelope whose BLAKE3 checksum is recomputed before
parsing (anyone can recompute it, so mutations then reach the semantic checks); even →
the rest is parsed as it is. Seeds are written in both modes (fuzz/seeds.py).

Small parameters (N = 4096) keep inputs a few hundred KiB at most; the fused TenSEAL
sum also gets a default-preset (60-bit primes, zstd raw blocks read in place) target.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import blake3

__all__ = ["TARGETS", "Target", "reseal_checksum"]


@dataclass
class Target:
    """Seeds (valid inputs) and the parser under test."""

    seeds: list[bytes]
    parse: Callable[[bytes], object]
    envelope: bool = True
    keep: list[Any] = field(default_factory=list)  # objects the parser's closure needs alive


def reseal_checksum(data: bytes) -> bytes:
    """``data`` with its envelope checksum recomputed when its lengths are consistent, else as is."""
    from he_agg.hazmat.wire import envelope

    fixed = envelope._FIXED
    if len(data) < fixed.size + 32:
        return data
    _, _, _, meta_len, _, body_len = fixed.unpack_from(data)
    start = envelope._body_offset(meta_len)
    if start + body_len + 32 != len(data):
        return data
    body = memoryview(data)[start : start + body_len]
    checksum = blake3.blake3(data[:start] + envelope.body_hash(body)).digest()
    return data[: start + body_len] + checksum


# -- shared fixtures (built once per process, lazily) --------------------------------------------

_CACHE: dict[str, Any] = {}


def _small_params() -> Any:
    from he_agg.params import Params

    return Params.from_bit_sizes(4096, [40, 20, 40], 2.0**25)


def _tenseal_ctx(params: Any) -> Any:
    import tenseal as ts

    ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.n, coeff_mod_bit_sizes=params.to_tenseal_bit_sizes())
    ctx.global_scale = params.scale
    return ctx


def _public() -> dict[str, Any]:
    """A 2-of-3 public-key committee at small parameters, one update, its request and a share."""
    if "public" not in _CACHE:
        import numpy as np

        from he_agg.aggregator import Aggregator
        from he_agg.client import encrypt
        from he_agg.committee import Committee

        committee = Committee.generate(3, 2, _small_params())
        context = committee.public_context
        update = encrypt(context, {"w": np.linspace(-1, 1, 30), "b": np.ones(3)}, client_id="alice", round_id=7)
        other = encrypt(context, {"w": np.linspace(1, -1, 30), "b": np.ones(3)}, client_id="bob", round_id=7)
        agg = Aggregator(context, 7)
        agg.add(update.to_bytes())
        agg.add(other.to_bytes())
        request = agg.decryption_request()
        certificate = committee.certify(request, contributions=agg.contributions)
        share = committee[0].decryption_share(request, certificate, contributions=agg.contributions)
        _CACHE["public"] = dict(committee=committee, context=context, update=update, request=request,
                                certificate=certificate, share=share)
    return _CACHE["public"]


def _enrolled() -> dict[str, Any]:
    """A 2-of-3 enrolled committee, two clients' uploads, the request, certificate and a share."""
    if "enrolled" not in _CACHE:
        from tests.fuzzing import enrolled_round

        _CACHE["enrolled"] = enrolled_round()
    return _CACHE["enrolled"]


def _as_bytes(upload: Any) -> bytes:
    return upload if isinstance(upload, bytes) else upload.to_bytes()


# -- wire formats ------------------------------------------------------------------------------


def tenseal_vector() -> Target:
    """TenSEAL CKKSVector bytes (zstd and uncompressed) → CiphertextBatch."""
    import numpy as np
    import tenseal as ts

    from he_agg.ciphertext import CiphertextBatch

    params = _small_params()
    vec = ts.ckks_vector(_tenseal_ctx(params), np.linspace(-1, 1, 2100).tolist())
    raw = CiphertextBatch.from_tenseal(vec, params).to_tenseal_bytes(compress=False)
    return Target([vec.serialize(), raw], lambda b: CiphertextBatch.from_tenseal(b, params), envelope=False)


def tenseal_sum() -> Target:
    """The fused native sum straight from TenSEAL bytes (C kernels), small parameters."""
    target = tenseal_vector()
    from he_agg.ciphertext import CiphertextBatch

    params = _small_params()
    target.parse = lambda b: CiphertextBatch.sum([b, b], params)
    return target


def tenseal_sum_raw() -> Target:
    """The fused sum of TenSEAL's own zstd at 60-bit primes: raw blocks read in place (segmented kernel)."""
    import numpy as np
    import tenseal as ts

    from he_agg.ciphertext import CiphertextBatch
    from he_agg.params import AGGREGATION

    vec = ts.ckks_vector(_tenseal_ctx(AGGREGATION), np.linspace(-1, 1, 300).tolist())
    return Target([vec.serialize()], lambda b: CiphertextBatch.sum([b], AGGREGATION), envelope=False)


def tenseal_context() -> Target:
    """TenSEAL context bytes (public key, parameters)."""
    from he_agg.hazmat.wire import tenseal as tw

    ctx = _tenseal_ctx(_small_params())
    return Target([ctx.serialize(save_secret_key=False)], tw.read_context, envelope=False)


def envelope() -> Target:
    """he_agg ciphertext envelopes, plain and with packed residues, and their fused sum."""
    from he_agg.ciphertext import CiphertextBatch

    public = _public()
    params = public["context"].params
    batch = public["update"].ciphertext

    def parse(b: bytes) -> None:
        CiphertextBatch.from_bytes(b, params)
        CiphertextBatch.sum([b], params)

    return Target([batch.to_bytes()], parse)


def update() -> Target:
    """Public-key uploads (plain and packed residues) → EncryptedUpdate and Aggregator.add."""
    from he_agg.aggregator import Aggregator
    from he_agg.client import EncryptedUpdate

    public = _public()
    context, up = public["context"], public["update"]

    def parse(b: bytes) -> None:
        EncryptedUpdate.from_bytes(b, context)
        Aggregator(context, 7).add(b)

    return Target([up.to_bytes(), up.to_bytes(packed=True)], parse)


def public_context() -> Target:
    from he_agg.context import PublicContext

    return Target([_public()["context"].to_bytes()], PublicContext.from_bytes)


def request() -> Target:
    """Public-key decryption requests → DecryptionRequest."""
    from he_agg.requests import DecryptionRequest

    public = _public()
    context = public["context"]
    return Target([public["request"].to_bytes()], lambda b: DecryptionRequest.from_bytes(b, context))


def share() -> Target:
    """Decryption shares of both modes."""
    from he_agg.requests import DecryptionShare

    public, enrolled = _public(), _enrolled()
    pctx, ectx = public["context"], enrolled["committee"].context

    def parse(b: bytes) -> None:
        for ctx in (pctx, ectx):
            try:
                DecryptionShare.from_bytes(b, ctx)
            except Exception as exc:
                from he_agg.errors import HeAggError

                if not isinstance(exc, HeAggError):
                    raise

    return Target([public["share"].to_bytes(), enrolled["share"].to_bytes()], parse)


def _each(calls: list[Callable[[], object]]) -> None:
    """Run every call; a HeAggError from one does not stop the others (the last one is re-raised)."""
    from he_agg.errors import HeAggError

    error: HeAggError | None = None
    for call in calls:
        try:
            call()
        except HeAggError as exc:
            error = exc
    if error is not None:
        raise error


def approval() -> Target:
    """Approvals and quorum certificates of both modes, parsed and checked against each mode's request."""
    from he_agg.quorum import Approval, QuorumCertificate

    enrolled, public = _enrolled(), _public()
    cases = [(enrolled["committee"].context, enrolled["request"]), (public["context"], public["request"])]

    def check_cert(b: bytes, context: Any, req: Any) -> None:
        QuorumCertificate.from_bytes(b).check(context.roster, context.committee_id, context.colluders,
                                              req.round_id, req.digest)

    def parse(b: bytes) -> None:
        calls: list[Callable[[], object]] = []
        for context, req in cases:
            calls.append(lambda c=context: Approval.from_bytes(b).check(c.roster, c.committee_id))
            calls.append(lambda c=context, r=req: check_cert(b, c, r))
        try:
            _each(calls)
        except Exception as exc:  # at least one parse accepted: the seeds pass
            from he_agg.errors import HeAggError

            if not isinstance(exc, HeAggError):
                raise

    seeds = [enrolled["certificate"].to_bytes(), enrolled["certificate"].approvals[0].to_bytes(),
             public["certificate"].to_bytes()]
    return Target(seeds, parse)


# -- enrolled mode -------------------------------------------------------------------------------


def enrolled_context() -> Target:
    from he_agg.context import EnrolledContext

    return Target([_enrolled()["committee"].context.to_bytes()], EnrolledContext.from_bytes)


def enrolled_request() -> Target:
    """Enrolled requests, parsed and approved by a member that already approved the round."""
    from he_agg.requests import EnrolledRequest

    enrolled = _enrolled()
    committee = enrolled["committee"]
    context, member = committee.context, committee[2]

    def parse(b: bytes) -> None:
        member.approve(EnrolledRequest.from_bytes(b, context))

    return Target([enrolled["request"].to_bytes()], parse)


def enrolled_upload() -> Target:
    """Enrolled uploads (plain and packed c0) and their tickets; the server's Aggregator.add too
    (its hash deferred to the summing pass), for every input."""
    import numpy as np

    from he_agg.aggregator import Aggregator
    from he_agg.enrolled import EnrolledUpload, Ticket

    enrolled = _enrolled()
    committee, clients = enrolled["committee"], enrolled["clients"]
    context, key = committee.context, clients[0].public_key
    first = _as_bytes(enrolled["uploads"][0])
    parsed = EnrolledUpload.from_bytes(first, context.params, context.committee_id, verify_key=key)
    seeds = [first, parsed.to_bytes(packed=True), parsed.ticket.to_bytes()]

    base = Aggregator(committee.public_context, 1, min_clients=2)
    base.add(_as_bytes(enrolled["uploads"][1]))
    before = base._accumulator.sum.copy()

    def server_add(b: bytes) -> None:
        """The server's add hashes the body in its summing pass: first upload of a round, and
        second into a round whose sum must be untouched by a refusal."""
        try:
            Aggregator(committee.public_context, 1, min_clients=2).add(b)
        finally:
            try:
                base.add(b)
            except BaseException:
                if not (np.array_equal(base._accumulator.sum, before) and len(base) == 1):
                    raise AssertionError("a refused upload changed the running sum") from None
                raise
            base._accumulator = None  # accepted: start the round over
            base.add(_as_bytes(enrolled["uploads"][1]))

    def parse(b: bytes) -> None:
        if b[:4] == seeds[2][:4] and b[4:6] != first[4:6]:
            Ticket.from_bytes(b).verify(key)
            return
        try:
            EnrolledUpload.from_bytes(b, context.params, context.committee_id, verify_key=key)
        finally:
            server_add(b)

    return Target(seeds, parse, keep=[base])


def ticket() -> Target:
    """Enrolled tickets alone."""
    from he_agg.enrolled import EnrolledUpload, Ticket

    enrolled = _enrolled()
    context, key = enrolled["committee"].context, enrolled["clients"][0].public_key
    up = EnrolledUpload.from_bytes(_as_bytes(enrolled["uploads"][0]), context.params, context.committee_id,
                                   verify_key=key)
    return Target([up.ticket.to_bytes()], lambda b: Ticket.from_bytes(b).verify(key))


def enrollment() -> Target:
    """Enrollment dealings (a member receives) and acks (a member accepts)."""
    from tests.fuzzing import enrollment_messages

    committee, dealing, acks = enrollment_messages()

    def parse(b: bytes) -> None:
        if len(b) > len(acks[1]) * 2:
            committee[0].enrollment.receive(b)
        else:
            committee[1].enrollment.accept([acks[0], b, acks[2]])

    return Target([dealing, acks[1]], parse, keep=[committee])


def keygen() -> Target:
    """Dealer-free key-generation messages: round 1 (commitments) into round 2."""
    from he_agg.identity import PartyIdentity
    from he_agg.keygen import KeygenConfig, KeygenParty

    params = _small_params()
    identities = [PartyIdentity.generate() for _ in range(3)]
    config = KeygenConfig.new(params, 2, [i.public_key for i in identities])
    parties = [KeygenParty(config, i, identity) for i, identity in enumerate(identities)]
    first = [p.round1() for p in parties]
    second = [p.round2(first) for p in parties]

    def parse(b: bytes) -> None:
        party = KeygenParty(config, 0, identities[0])
        if b[6:8] != first[2][6:8]:  # not a round-1 kind: into round 3
            party._messages, party._held = dict(parties[0]._messages), parties[0]._held
            party._transcripts, party._commitments = list(parties[0]._transcripts[:1]), dict(parties[0]._commitments)
            party._pieces = dict(parties[0]._pieces)
            party._messages.pop(3, None)
            party.round3([second[0], second[1], b])
        else:
            party.round2([party.round1(), first[1], b])

    return Target([first[2], second[2]], parse)


# -- files ------------------------------------------------------------------------------------------


def _file_target(valid: bytes, load: Callable[[Path], object], keep: list[Any]) -> Target:
    directory = Path(tempfile.mkdtemp(prefix="he-agg-fuzz-"))
    os.chmod(directory, 0o700)
    counter = [0]

    def parse(b: bytes) -> None:
        counter[0] += 1
        path = directory / f"f{counter[0] % 64}.key"  # few names: sidecar state files do not pile up
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(b)
        try:
            load(path)
        finally:
            for extra in directory.iterdir():
                if extra != path and not extra.name.startswith("f"):
                    extra.unlink(missing_ok=True)

    return Target([valid], parse, keep=keep + [directory])


def keyshare_file() -> Target:
    """Public-key mode key-share files (plaintext form: the sealed form's AEAD stops mutations)."""
    from he_agg.keyshare import KeyShare

    from he_agg.committee import Committee

    committee = Committee.generate(3, 2, _small_params())  # fresh: a share saves before it answers
    directory = Path(tempfile.mkdtemp(prefix="he-agg-seed-"))
    committee[0].save(directory / "member.key", insecure_plaintext=True)
    return _file_target((directory / "member.key").read_bytes(), KeyShare.load, [committee])


def member_file() -> Target:
    """Enrolled-mode member files (plaintext form)."""
    from he_agg.member import EnrolledMember

    from he_agg.member import EnrolledCommittee

    committee = EnrolledCommittee.generate(3, 2)
    context = committee.context
    directory = Path(tempfile.mkdtemp(prefix="he-agg-seed-"))
    committee[0].save(directory / "member.key", insecure_plaintext=True)
    return _file_target((directory / "member.key").read_bytes(), lambda p: EnrolledMember.load(p, context),
                        [committee])


def _fast_kdf(passphrase: bytes, salt: bytes, ops: int, mem: int) -> tuple[bytes, bytes]:
    """A BLAKE2b stand-in for ``files._derive`` (same inputs, same outputs' shape)."""
    from hashlib import blake2b

    key = blake2b(passphrase + salt + ops.to_bytes(8, "little") + mem.to_bytes(8, "little"), digest_size=32,
                  person=b"he_agg.fuzz.kdf").digest()
    return key, blake2b(b"", key=key, digest_size=16, person=b"he_agg.pw.check").digest()


def sealed_file() -> Target:
    """The sealed (Argon2id + XChaCha20-Poly1305) private-file header. Argon2id (libsodium's,
    ~45 ms per input) is replaced by a BLAKE2b stand-in in this process only, so the
    fuzzer spends its time in he_agg's own code: header parsing, the KDF limit checks, the
    check value, the AEAD framing."""
    from he_agg.hazmat import files

    files._derive = _fast_kdf  # this fuzzing process only (never imported by he_agg)
    directory = Path(tempfile.mkdtemp(prefix="he-agg-seed-"))
    path = directory / "x.key"
    files.write_private(path, b"HEAG payload", passphrase=b"correct horse battery")
    target = _file_target(path.read_bytes(), lambda p: files.read_private(p, passphrase=b"correct horse battery"),
                          [])
    target.envelope = False
    return target


TARGETS: dict[str, Callable[[], Target]] = {
    "tenseal_vector": tenseal_vector,
    "tenseal_sum": tenseal_sum,
    "tenseal_sum_raw": tenseal_sum_raw,
    "tenseal_context": tenseal_context,
    "envelope": envelope,
    "update": update,
    "public_context": public_context,
    "request": request,
    "share": share,
    "approval": approval,
    "enrolled_context": enrolled_context,
    "enrolled_request": enrolled_request,
    "enrolled_upload": enrolled_upload,
    "ticket": ticket,
    "enrollment": enrollment,
    "keygen": keygen,
    "keyshare_file": keyshare_file,
    "member_file": member_file,
    "sealed_file": sealed_file,
}
