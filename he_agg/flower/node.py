"""The node side: committee members and training clients answering he_agg messages.

One ClientApp serves both roles (see :mod:`he_agg.flower._roles`). :func:`install` registers
the ``query.he_agg_*`` handlers on an app; :func:`encrypted_train_mod` encrypts what the
app's ``@app.train()`` function returns. Every key, seed and registry lives in the node's
state directory (files 0600, sealed with a passphrase from the environment variable named
by node config ``passphrase-env``, default ``HE_AGG_PASSPHRASE``; simulations without one
write them unsealed), so any process that runs the node's ClientApp resumes from it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..context import EnrolledContext, PublicContext
from ..enrolled import EnrolledClient
from ..errors import EnrollmentError, FormatError, HeAggError, UsageError
from ..identity import PartyIdentity
from ..member import EnrolledMember, EnrolledPolicy
from ..params import AGGREGATION, ENROLLED
from ..requests import DecryptionRequest, EnrolledRequest
from . import _records as rec
from ._roles import Role, node_role

__all__ = ["QUERIES", "install", "load_identity", "encrypted_train_mod", "encrypt_reply", "DEFAULT_MAX_CLIENTS", "EPOCH"]

log = logging.getLogger("he_agg.flower")

EPOCH = 0
DEFAULT_MAX_CLIENTS = 100
DEFAULT_EPOCH_COEFFICIENTS = 1 << 24
_CONTEXT, _IDENTITY, _MEMBER, _CLIENT = "context", "identity", "member", "client"
_PUBLIC, _KEYSHARE, _CHECKPOINT = "public-context", "keyshare", "keygen-checkpoint"

_cache: dict[tuple[str, str], Any] = {}  # per process: (state dir, kind) → loaded object


# -- files -------------------------------------------------------------------------------


def _secret_args(role: Role) -> dict[str, Any]:
    env = str(role.node_config.get("passphrase-env", "HE_AGG_PASSPHRASE"))
    passphrase = os.environ.get(env)
    if passphrase:
        return {"passphrase": passphrase.encode()}
    if role.simulated or role.node_config.get("insecure-plaintext") is True:
        return {}
    raise UsageError(f"set the passphrase for this node's key files in ${env} "
                     "(or node config insecure-plaintext=true for tests)")


def _write_secret(role: Role, path: Path, data: bytes) -> None:
    from ..hazmat.files import write_private

    args = _secret_args(role)
    write_private(path, data, insecure_plaintext="passphrase" not in args, **args)


def _state(role: Role) -> Path:
    role.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    return role.state_dir


def _load_cached(role: Role, name: str, parse: Any, missing: str) -> Any:
    """``parse(bytes)`` of the node's file ``name``, cached per state directory; UsageError(missing) if absent."""
    key = (str(role.state_dir), name)
    if key not in _cache:
        path = role.state_dir / name
        if not path.exists():
            raise UsageError(missing)
        _cache[key] = parse(path.read_bytes())
    return _cache[key]


def _context(role: Role) -> EnrolledContext:
    return _load_cached(role, _CONTEXT, lambda data: EnrolledContext.from_bytes(data, ENROLLED),
                        "this node holds no committee context yet (set-up not run)")


def _save_context(role: Role, data: bytes) -> EnrolledContext:
    context = EnrolledContext.from_bytes(data, ENROLLED)
    path = _state(role) / _CONTEXT
    if path.exists() and path.read_bytes() != data:
        raise UsageError("this node already belongs to another committee in this run")
    path.write_bytes(data)
    _cache[(str(role.state_dir), _CONTEXT)] = context
    return context


def _member(role: Role) -> EnrolledMember:
    key = (str(role.state_dir), _MEMBER)
    if key not in _cache:
        _cache[key] = EnrolledMember.load(role.state_dir / _MEMBER, _context(role), **_secret_args(role))
    return _cache[key]


def _client(role: Role) -> EnrolledClient:
    key = (str(role.state_dir), _CLIENT)
    if key not in _cache:
        _cache[key] = EnrolledClient.load(role.state_dir / _CLIENT, _context(role), **_secret_args(role))
    return _cache[key]


def _policy(role: Role, context: Any) -> EnrolledPolicy:
    def get(key: str, default: int) -> int:
        value = role.node_config.get(key, context.run_config.get(key, default))
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"{key} must be an integer")
        return value

    return EnrolledPolicy(min_clients=get("he-agg-min-clients", 3),
                          max_clients=get("he-agg-max-clients", DEFAULT_MAX_CLIENTS),
                          epoch_coefficients=get("he-agg-epoch-coefficients", DEFAULT_EPOCH_COEFFICIENTS))


# -- handlers: every role -----------------------------------------------------------------


def _role(role: Role, record: Any, context: Any) -> Any:
    return rec.pack(role=role.kind, index=role.index, **{"client-id": role.client_id})


# -- handlers: members --------------------------------------------------------------------


def _own_identity(role: Role, *, create: bool = False) -> PartyIdentity:
    return load_identity(role.state_dir, passphrase=_secret_args(role).get("passphrase"), create=create)


def _identity(role: Role, record: Any, context: Any) -> Any:
    """Make (or reuse) this member's identity for this run; only its public key leaves."""
    return rec.pack(**{"public-key": _own_identity(role, create=True).public_key, "index": role.index})


def _join(role: Role, record: Any, context: Any) -> Any:
    """Receive the committee's context; check this member's key sits at its index; create the member."""
    ctx = _save_context(role, rec.field_bytes(record, "context", "he_agg_join"))
    identity = _own_identity(role)
    if role.index >= ctx.parties or ctx.roster[role.index] != identity.public_key:
        raise EnrollmentError(f"the proposed roster does not hold this member's key at index {role.index}")
    path = role.state_dir / _MEMBER
    if not path.exists():
        member = EnrolledMember.create(ctx, role.index, identity, _policy(role, context))
        member.save(path, insecure_plaintext="passphrase" not in _secret_args(role), **_secret_args(role))
    log.info("member %d joined committee %s", role.index, ctx.committee_id.hex()[:12])
    return rec.pack(committee=ctx.committee_id)


def _admitted_key(role: Role, client_id: str, relayed: bytes) -> bytes:
    """The key this member's operator admits: from the node's allow-list file, or the relayed
    one when the node trusts the server for admission (simulation, or admit-relayed=true)."""
    listing = role.node_config.get("admitted-keys")
    if listing:
        for line in Path(str(listing)).read_text().splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] == client_id:
                return bytes.fromhex(parts[1])
        raise EnrollmentError(f"client {client_id!r} is not on this member's allow-list")
    if role.simulated or role.node_config.get("admit-relayed") is True:
        return relayed
    raise UsageError("set admitted-keys=<file> (lines 'client-id hexkey') or admit-relayed=true in node config")


def _deal(role: Role, record: Any, context: Any) -> Any:
    """Admit each client and answer its dealing with a signed ack."""
    what = "he_agg_deal"
    ids = rec.field_list(record, "client-ids", what, str)
    keys = rec.field_list(record, "public-keys", what, bytes)
    dealings = rec.field_list(record, "dealings", what, bytes)
    if not len(ids) == len(keys) == len(dealings):
        raise FormatError(f"{what}: client-ids, public-keys and dealings differ in length")
    member = _member(role)
    acks = []
    for client_id, key, dealing in zip(ids, keys, dealings):
        if client_id not in member.enrollment.admitted():
            member.enrollment.admit(client_id, _admitted_key(role, client_id, key))
        acks.append(member.enrollment.receive(dealing))
    return rec.pack(acks=acks)


def _accept(role: Role, record: Any, context: Any) -> Any:
    """Accept each client whose dealing every member acked."""
    what = "he_agg_accept"
    member = _member(role)
    accepted = []
    for client_id in rec.field_list(record, "client-ids", what, str):
        acks = rec.field_list(record, f"acks:{client_id}", what, bytes)
        try:
            accepted.append(member.enrollment.accept(acks))
        except HeAggError as exc:
            log.warning("member %d did not accept %s: %s", role.index, client_id, type(exc).__name__)
    return rec.pack(accepted=accepted)


def _approve(role: Role, record: Any, context: Any) -> Any:
    if (role.state_dir / _KEYSHARE).exists():
        share, request, contributions = _public_request(role, record, "he_agg_approve")
        return rec.pack(approval=share.approve(request, contributions=contributions).to_bytes())
    member = _member(role)
    request = EnrolledRequest.from_bytes(rec.field_bytes(record, "request", "he_agg_approve"), member.context)
    return rec.pack(approval=member.approve(request).to_bytes())


def _decrypt(role: Role, record: Any, context: Any) -> Any:
    certificate = rec.field_bytes(record, "certificate", "he_agg_decrypt")
    if (role.state_dir / _KEYSHARE).exists():
        share, request, contributions = _public_request(role, record, "he_agg_decrypt")
        return rec.pack(share=share.decryption_share(request, certificate, contributions=contributions).to_bytes())
    member = _member(role)
    request = EnrolledRequest.from_bytes(rec.field_bytes(record, "request", "he_agg_decrypt"), member.context)
    return rec.pack(share=member.decryption_share(request, certificate).to_bytes())


# -- handlers: members, public-key mode (dealer-free key generation) -----------------------


def _public_context(role: Role) -> PublicContext:
    return _load_cached(role, _PUBLIC, lambda data: PublicContext.from_bytes(data, AGGREGATION),
                        "this node holds no public-key committee context (key generation not run)")


def _public_request(role: Role, record: Any, what: str) -> tuple[Any, DecryptionRequest, dict[str, bytes]]:
    """The key share (loaded afresh: its budget lives on disk), the request and the uploads it names,
    which the member re-sums before it approves or answers."""
    from ..keyshare import KeyShare

    context = _public_context(role)
    share = KeyShare.load(role.state_dir / _KEYSHARE, context, **_secret_args(role))
    request = DecryptionRequest.from_bytes(rec.field_bytes(record, "request", what), context)
    ids = rec.field_list(record, "client-ids", what, str)
    uploads = rec.field_list(record, "uploads", what, bytes)
    if len(ids) != len(uploads) or len(set(ids)) != len(ids):
        raise FormatError(f"{what}: client-ids and uploads must pair up, ids distinct")
    return share, request, dict(zip(ids, uploads))


def _keygen_config(role: Role, record: Any) -> Any:
    from ..keygen import KeygenConfig

    what = "he_agg_keygen1"
    try:
        return KeygenConfig(AGGREGATION, rec.field_int(record, "threshold", what),
                            tuple(rec.field_list(record, "roster", what, bytes)), rec.field_bytes(record, "seed", what))
    except ValueError as exc:
        raise FormatError(f"{what}: {exc}") from None


def _keygen_party(role: Role, rounds: int) -> Any:
    """This member's key-generation party, replayed from its checkpoint through ``rounds`` done rounds."""
    from ..hazmat.files import read_private
    from ..keygen import KeygenParty

    secret = _secret_args(role)
    identity = _own_identity(role)
    from ..keygen import KeygenConfig

    stored = _load_list(role, "keygen-config")
    config = KeygenConfig(AGGREGATION, int.from_bytes(stored[0], "big"), tuple(stored[2:]), stored[1])
    party = KeygenParty.resume(config, role.index, identity, read_private(role.state_dir / _CHECKPOINT, **secret))
    if rounds >= 2:
        party.round2(_load_list(role, "keygen-1"))
    if rounds >= 3:
        party.round3(_load_list(role, "keygen-2"))
    return party


def _save_list(role: Role, name: str, items: list[bytes]) -> None:
    (role.state_dir / name).write_bytes(b"".join(len(m).to_bytes(4, "big") + m for m in items))


def _load_list(role: Role, name: str) -> list[bytes]:
    data, items, pos = (role.state_dir / name).read_bytes(), [], 0
    while pos < len(data):
        size = int.from_bytes(data[pos : pos + 4], "big")
        items.append(data[pos + 4 : pos + 4 + size])
        pos += 4 + size
    return items


def _keygen1(role: Role, record: Any, context: Any) -> Any:
    """Round 1 of dealer-free key generation; the round's secret state is checkpointed (sealed)."""
    from ..keygen import KeygenParty

    config = _keygen_config(role, record)
    if (role.state_dir / _CHECKPOINT).exists():
        return rec.pack(message=_keygen_party(role, 1).round1())
    identity = _own_identity(role)
    try:
        party = KeygenParty(config, role.index, identity)
    except ValueError as exc:
        raise EnrollmentError(f"key generation refused: {exc}") from None
    message = party.round1()
    _save_list(role, "keygen-config", [config.threshold.to_bytes(2, "big"), config.seed, *config.roster])
    _write_secret(role, role.state_dir / _CHECKPOINT, party.checkpoint())
    return rec.pack(message=message)


def _keygen2(role: Role, record: Any, context: Any) -> Any:
    messages = rec.field_list(record, "messages", "he_agg_keygen2", bytes)
    reply = _keygen_party(role, 1).round2(messages)
    _save_list(role, "keygen-1", messages)
    return rec.pack(message=reply)


def _keygen3(role: Role, record: Any, context: Any) -> Any:
    messages = rec.field_list(record, "messages", "he_agg_keygen3", bytes)
    reply = _keygen_party(role, 2).round3(messages)
    _save_list(role, "keygen-2", messages)
    return rec.pack(message=reply)


def _keygen_finish(role: Role, record: Any, context: Any) -> Any:
    """Check the revealed pieces, save the key share, erase the checkpoint; the public context leaves."""
    from ..keyshare import Policy

    path = role.state_dir / _KEYSHARE
    if not path.exists():
        messages = rec.field_list(record, "messages", "he_agg_keygen_finish", bytes)
        policy = _policy(role, context)
        budget = context.run_config.get("he-agg-budget", 64)
        share = _keygen_party(role, 3).finish(messages, Policy(min_clients=policy.min_clients, budget=int(budget),
                                                               max_clients=policy.max_clients))
        secret = _secret_args(role)
        share.save(path, insecure_plaintext="passphrase" not in secret, **secret)
        (role.state_dir / _PUBLIC).write_bytes(share.context.to_bytes())
        (role.state_dir / _CHECKPOINT).unlink()
        log.info("member %d: key generation done, committee %s", role.index, share.context.committee_id.hex()[:12])
    return rec.pack(context=(role.state_dir / _PUBLIC).read_bytes())


# -- handlers: training clients -----------------------------------------------------------


def load_identity(directory: Path, *, passphrase: bytes | None = None, create: bool = True) -> PartyIdentity:
    """The node's long-lived identity in ``directory``/identity (made on first use): a client
    keeps one key across runs, so member operators can admit it from an allow-list."""
    from ..hazmat.files import read_private, write_private

    path = directory / _IDENTITY
    if path.exists():
        return PartyIdentity.from_private_bytes(read_private(path, passphrase=passphrase))
    if not create:
        raise UsageError(f"no identity in {directory}")
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    identity = PartyIdentity.generate()
    write_private(path, identity.private_bytes(), passphrase=passphrase, insecure_plaintext=passphrase is None)
    return identity


def _enroll(role: Role, record: Any, context: Any) -> Any:
    """Create this client's enrollment for the committee; its dealing goes to every member."""
    ctx = _save_context(role, rec.field_bytes(record, "context", "he_agg_enroll"))
    path = role.state_dir / _CLIENT
    if path.exists():
        client = _client(role)
    else:
        identity = load_identity(role.state_dir.parent, passphrase=_secret_args(role).get("passphrase"))
        client = EnrolledClient.create(ctx, role.client_id, EPOCH, identity=identity)
        client.save(path, insecure_plaintext="passphrase" not in _secret_args(role), **_secret_args(role))
        _cache[(str(role.state_dir), _CLIENT)] = client
    return rec.pack(**{"client-id": client.client_id, "public-key": client.public_key, "dealing": client.dealing()})


def _public(role: Role, record: Any, context: Any) -> Any:
    """Public-key mode: keep the committee's public context (clients encrypt under it)."""
    data = rec.field_bytes(record, "context", "he_agg_public")
    PublicContext.from_bytes(data, AGGREGATION)
    path = _state(role) / _PUBLIC
    if path.exists() and path.read_bytes() != data:
        raise UsageError("this node already holds another committee's public context in this run")
    path.write_bytes(data)
    return rec.pack(ok=True)


def _confirm(role: Role, record: Any, context: Any) -> Any:
    _client(role).confirm(rec.field_list(record, "acks", "he_agg_confirm", bytes))
    return rec.pack(confirmed=True)


_MEMBER_QUERIES: dict[str, Callable[[Role, Any, Any], Any]] = {
    "he_agg_identity": _identity, "he_agg_join": _join, "he_agg_deal": _deal, "he_agg_accept": _accept,
    "he_agg_approve": _approve, "he_agg_decrypt": _decrypt, "he_agg_keygen1": _keygen1, "he_agg_keygen2": _keygen2,
    "he_agg_keygen3": _keygen3, "he_agg_keygen_finish": _keygen_finish,
}
_CLIENT_QUERIES: dict[str, Callable[[Role, Any, Any], Any]] = {
    "he_agg_enroll": _enroll, "he_agg_confirm": _confirm, "he_agg_public": _public,
}
QUERIES = ("he_agg_role", *_MEMBER_QUERIES, *_CLIENT_QUERIES)


def _handler(name: str) -> Callable[[Any, Any], Any]:
    def handle(msg: Any, context: Any) -> Any:
        from flwr.app import Message

        role = node_role(context)
        if name == "he_agg_role":
            return Message(_role(role, None, context), reply_to=msg)
        table = _MEMBER_QUERIES if role.is_member else _CLIENT_QUERIES
        if name not in table:
            raise UsageError(f"a {role.kind} node does not answer query.{name}")
        record = rec.record_of(msg.content, f"query.{name}")
        return Message(table[name](role, record, context), reply_to=msg)

    handle.__name__ = f"handle_{name}"
    return handle


def install(app: Any) -> Any:
    """Register every ``query.he_agg_*`` handler on a ``flwr.clientapp.ClientApp``; returns it."""
    for name in QUERIES:
        app.query(name)(_handler(name))
    return app


# -- the training mod ---------------------------------------------------------------------


def encrypt_reply(reply: Any, context: Any, *, round_id: int, max_clients: int,
                  weighted_by_key: str = "num-examples") -> Any:
    """Replace a train reply's content by this client's upload: the arrays, weighted by the
    metric ``weighted_by_key``, encrypted under the client's enrollment. Nothing else leaves."""
    content = reply.content
    if len(content.array_records) != 1 or len(content.metric_records) != 1:
        raise FormatError("a train reply must hold one ArrayRecord and one MetricRecord")
    arrays = next(iter(content.array_records.values()))
    metrics = next(iter(content.metric_records.values()))
    weight = metrics.get(weighted_by_key)
    if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not weight > 0:
        raise UsageError(f"the train reply's metric '{weighted_by_key}' must be a positive number")
    update = {key: np.asarray(array.numpy(), dtype=np.float64) for key, array in arrays.items()}
    role = node_role(context)
    if (role.state_dir / _PUBLIC).exists():  # public-key mode: TenSEAL encryption under the collective key
        from ..client import encrypt

        upload = encrypt(_public_context(role), update, client_id=role.client_id, round_id=round_id,
                         weight=float(weight), max_clients=max_clients).to_bytes()
    else:
        upload = _client(role).encrypt(update, round_id=round_id, weight=float(weight), max_clients=max_clients)
    reply.content = rec.pack(upload=upload)
    return reply


def encrypted_train_mod(msg: Any, context: Any, call_next: Callable[[Any, Any], Any]) -> Any:
    """ClientApp mod: on ``train`` messages, run the app's training and send only ciphertext.

    Committee members refuse training; other message types pass through untouched."""
    if msg.metadata.message_type != "train":
        return call_next(msg, context)
    role = node_role(context)
    if role.is_member:
        raise UsageError("a committee member does not train")
    config = next(iter(msg.content.config_records.values()), None) or {}
    round_id = config.get("server-round")
    max_clients = config.get("he-agg-max-clients", DEFAULT_MAX_CLIENTS)
    weighted_by_key = config.get("he-agg-weighted-by", "num-examples")
    if not isinstance(round_id, int) or not isinstance(max_clients, int) or not isinstance(weighted_by_key, str):
        raise FormatError("the train config needs integer server-round and he-agg-max-clients")
    reply = call_next(msg, context)
    if reply.has_error():
        return reply
    return encrypt_reply(reply, context, round_id=round_id, max_clients=max_clients, weighted_by_key=weighted_by_key)
