r"""Key generation for a t-of-n committee: a trusted dealer, or authenticated dealer-free rounds.

The committee key is replicated-shared (:mod:`he_agg.hazmat.replicated`): s = Σ_T s_T over
the (t−1)-subsets T, member i holding every s_T with i ∉ T; the public key is
pk = (Σ_T P_T, a) with P_T = −(a·s_T + e_T).

Dealer (:func:`deal`, one process, simulations and tests): one seed per subset.

Dealer-free (:class:`KeygenParty`, one object per member, bytes in / bytes out). Every
message is signed with the member's Ed25519 key from the roster (:mod:`he_agg.signed`),
so whoever relays the messages can drop them but not forge or edit them.

* **round 1 — deal.** Member i draws a seed σ_{i,T} for every subset T and broadcasts
  commitments to all of them, plus, sealed to each member j (X25519 box, bound to the
  session, sender and recipient), the seeds of the subsets j holds.
  s_T = Σ_i expand(σ_{i,T}): each sub-secret has a contribution from every member, so the
  one sub-secret that t−1 colluders lack, s_C, still holds an honest member's randomness.
* **round 2 — commit.** Each member opens its boxes, checks every seed against its
  dealer's commitment, computes P_T for each subset it holds, and broadcasts commitments
  to those P_T and the hash of the round-1 transcript it saw.
* **round 3 — reveal.** Once every commitment is in, the designated holder of each subset
  (its smallest holder) reveals P_T; every member checks each revealed P_T against all
  its holders' commitments, and that everybody saw the same earlier rounds.
* **finish.** pk0 = Σ_T P_T. The committee id binds the session, the roster, c and the
  hash of the whole transcript: a member whose view differs ends in a different committee,
  and its approvals count toward no other view's quorum certificate.

Why commit before revealing: with P_T visible, a designated holder of some T that no
honest member holds (possible when n ≤ 2t − 2) could publish P_T − P_C and make the
public key one whose secret the colluders know. With commitments it must choose before
seeing P_C. Each member enforces its own floor on the flooding parameter
(``min_statistical_bits``) whatever the configuration says.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

import blake3
import numpy as np

from .context import PublicContext
from .errors import FormatError, KeygenError, ParameterMismatchError
from .hazmat import kernels
from .hazmat.ckks import signed_to_rns
from .hazmat.replicated import (
    check_committee_shape,
    expand_error,
    expand_ternary,
    held_subsets,
    holders,
    seed_commitment,
    subsets,
)
from .hazmat.rlwe import common_polynomial
from .hazmat.sampling import KEY_BYTES, fresh_key
from .hazmat.wire import seal
from .hazmat.wire.envelope import Kind, Meta, body_words
from .identity import PartyIdentity, check_public_key
from .keyshare import KeyShare, Policy
from .params import Params
from .signed import open_signed, seal_signed

__all__ = ["KeygenConfig", "KeygenParty", "PartyIdentity", "deal"]

MIN_STATISTICAL_BITS = 40


def _seed_label(session: bytes, dealer: int, subset: int) -> bytes:
    return b"he_agg.keygen.seed\0" + session + struct.pack("<HH", dealer, subset)


def public_piece(s_coefficients: np.ndarray, e_coefficients: np.ndarray, a: np.ndarray, params: Params) -> np.ndarray:
    """P = −(a·s + e) at the key level (NTT form) from small coefficient arrays."""
    moduli = params.moduli
    s = signed_to_rns(s_coefficients.astype(np.int64), moduli)
    e = signed_to_rns(e_coefficients.astype(np.int64), moduli)
    kernels.ntt_forward(s, moduli)
    kernels.ntt_forward(e, moduli)
    out = np.empty_like(a)
    kernels.muladd(out, a, s, e, moduli)
    kernels.sub(out, np.zeros_like(out), out, moduli)
    s.fill(0)
    e.fill(0)
    return out


def _piece_commitment(session: bytes, subset: int, piece: np.ndarray) -> bytes:
    return blake3.blake3(b"he_agg.keygen.piece\0" + session + struct.pack("<H", subset) + piece.tobytes()).digest()


def _transcript(label: bytes, messages: Sequence[bytes]) -> bytes:
    h = blake3.blake3(label)
    for message in messages:
        h.update(struct.pack("<Q", len(message)))
        h.update(message)
    return h.digest()


# -- trusted dealer ----------------------------------------------------------------------


def deal(params: Params, parties: int, threshold: int, *, policy: Policy | None = None, statistical_bits: int = 40,
         colluders: int | None = None, allow_single: bool = False) -> tuple[PublicContext, list[KeyShare]]:
    """A committee from a trusted dealer in this process; the dealer's seeds are dropped.

    Each member gets a fresh identity (its Ed25519 key: ``KeyShare.identity``).
    """
    check_committee_shape(parties, threshold, allow_single=allow_single)
    session = fresh_key()
    a = common_polynomial(fresh_key(), params)
    identities = [PartyIdentity.generate() for _ in range(parties)]
    pk0 = np.zeros_like(a)
    held: list[dict[int, np.ndarray]] = [{} for _ in range(parties)]
    for k, subset in enumerate(subsets(parties, threshold)):
        seed, label = fresh_key(), _seed_label(session, 0, k)
        s_k, e_k = expand_ternary(seed, label, params.n), expand_error(seed, label, params.n)
        kernels.add(pk0, pk0, public_piece(s_k, e_k, a, params), params.moduli)
        for j in holders(subset, parties):
            held[j][k] = s_k.copy()
        s_k.fill(0)
        e_k.fill(0)
    context = PublicContext(params, np.stack([pk0, a]), parties=parties, threshold=threshold,
                            roster=tuple(i.public_key for i in identities), colluders=colluders,
                            secret_terms=len(subsets(parties, threshold)), statistical_bits=statistical_bits,
                            transcript=_transcript(b"he_agg.dealer\0", [session]), allow_single=allow_single)
    return context, [KeyShare(context, j, identities[j], held[j], fresh_key(), policy) for j in range(parties)]


# -- dealer-free -------------------------------------------------------------------------


@dataclass(frozen=True)
class KeygenConfig:
    """Everything the n members agree on before round 1 (all public)."""

    params: Params
    threshold: int
    roster: tuple[bytes, ...]  # Ed25519 verify keys, member i at index i
    seed: bytes  # expands into the common polynomial a; also makes the session unique
    statistical_bits: int = 40
    colluders: int | None = None  # c; None means t − 1

    def __post_init__(self) -> None:
        check_committee_shape(len(self.roster), self.threshold)
        for i, key in enumerate(self.roster):
            check_public_key(key, f"roster entry {i}")
        if len(set(self.roster)) != len(self.roster):
            raise ValueError("the roster lists a member key twice")
        if len(self.seed) != KEY_BYTES:
            raise ValueError(f"the seed is {KEY_BYTES} bytes")
        if self.colluders is not None and not 0 <= self.colluders < self.threshold:
            raise ValueError(f"the colluder bound c must be in [0, t), got {self.colluders}")
        if not 16 <= self.statistical_bits <= 128:
            raise ValueError("statistical_bits must be in [16, 128]")

    @classmethod
    def new(cls, params: Params, threshold: int, roster: Sequence[bytes], *, statistical_bits: int = 40,
            colluders: int | None = None) -> "KeygenConfig":
        """A configuration with a fresh random seed (the coordinator's job)."""
        return cls(params, threshold, tuple(bytes(k) for k in roster), fresh_key(), statistical_bits, colluders)

    @property
    def parties(self) -> int:
        return len(self.roster)

    @property
    def effective_colluders(self) -> int:
        return self.threshold - 1 if self.colluders is None else self.colluders

    @property
    def session_id(self) -> bytes:
        header = struct.pack("<HHHH", self.parties, self.threshold, self.effective_colluders, self.statistical_bits)
        return blake3.blake3(b"he_agg.keygen.v2\0" + self.params.fingerprint + header + self.seed
                             + b"".join(self.roster)).digest()


def _box_aad(session: bytes, sender: int, recipient: int) -> bytes:
    return b"he_agg.keygen.box\0" + session + struct.pack("<HH", sender, recipient)


class KeygenParty:
    """One member's side of dealer-free key generation.

    ``round1()``, ``round2(round-1 messages)``, ``round3(round-2 messages)``,
    ``finish(round-3 messages)``: each returns the bytes to broadcast (``finish``: the
    :class:`KeyShare`). Messages may be given in any order; each must come from a
    different member. A retry of any step returns its first result, never fresh secrets.
    """

    def __init__(self, config: KeygenConfig, party: int, identity: PartyIdentity, *,
                 min_statistical_bits: int = MIN_STATISTICAL_BITS) -> None:
        if not 0 <= party < config.parties:
            raise ValueError(f"party must be in [0, {config.parties})")
        if identity.public_key != config.roster[party]:
            raise ValueError(f"this identity is not the roster's member {party}")
        if config.statistical_bits < min_statistical_bits:
            raise ValueError(f"the configuration floods at s={config.statistical_bits} bits; this member requires "
                             f"at least {min_statistical_bits}")
        self.config = config
        self.party = party
        self._identity = identity
        self._session = config.session_id
        self._held = held_subsets(party, config.parties, config.threshold)
        self._messages: dict[int, bytes] = {}
        self._own_seeds: dict[int, bytes] = {}
        self._subsecrets: dict[int, np.ndarray] = {}
        self._pieces: dict[int, np.ndarray] = {}
        self._commitments: dict[int, bytes] = {}
        self._transcripts: list[bytes] = []
        self._result: KeyShare | None = None

    # -- round 1 -----------------------------------------------------------------------------

    def round1(self) -> bytes:
        """Deal: commitments to a seed per subset, and each member's seeds sealed to it."""
        if 1 in self._messages:
            return self._messages[1]
        config, session = self.config, self._session
        count = len(subsets(config.parties, config.threshold))
        seeds = [fresh_key() for _ in range(count)]
        commitments = [seed_commitment(seed, _seed_label(session, self.party, k)).hex() for k, seed in enumerate(seeds)]
        sealed = []
        for j in range(config.parties):
            chosen = b"".join(seeds[k] for k in held_subsets(j, config.parties, config.threshold))
            if j == self.party:
                self._own_seeds = {k: seeds[k] for k in self._held}
                sealed.append(b"")
            else:
                sealed.append(self._identity.seal_to(config.roster[j], _box_aad(session, self.party, j) + chosen))
        meta = {"session": session.hex(), "sender": self.party, "commitments": commitments,
                "sealed": [len(s) for s in sealed]}
        self._messages[1] = seal_signed(Kind.KEYGEN_MESSAGE, meta, b"".join(sealed), self._identity)
        return self._messages[1]

    def checkpoint(self) -> bytes:
        """After :meth:`round1`, before :meth:`round2`: the round-1 message and this member's own
        seeds (SECRET: store it sealed) for :meth:`resume` in another process. Rounds 2, 3 and
        ``finish`` are deterministic given it and the other members' messages, so a member that
        runs one process per message replays them from the checkpoint."""
        if 1 not in self._messages or 2 in self._messages:
            raise KeygenError("checkpoint() is for after round1() and before round2()")
        return (len(self._messages[1]).to_bytes(4, "big") + self._messages[1]
                + b"".join(self._own_seeds[k] for k in self._held))

    @classmethod
    def resume(cls, config: KeygenConfig, party: int, identity: PartyIdentity, checkpoint: bytes) -> "KeygenParty":
        """The member as :meth:`checkpoint` left it (round 1 done)."""
        me = cls(config, party, identity)
        size = int.from_bytes(bytes(checkpoint[:4]), "big")
        seeds = bytes(checkpoint[4 + size :])
        if len(checkpoint) < 4 + size or len(seeds) != KEY_BYTES * len(me._held):
            raise FormatError("not a key generation checkpoint of this member")
        me._messages[1] = bytes(checkpoint[4 : 4 + size])
        me._own_seeds = {k: seeds[KEY_BYTES * x : KEY_BYTES * (x + 1)] for x, k in enumerate(me._held)}
        return me

    # -- round 2 -----------------------------------------------------------------------------

    def round2(self, messages: Sequence[bytes]) -> bytes:
        """Open and check the seeds dealt to this member; commit to its public-key pieces."""
        if 2 in self._messages:
            return self._messages[2]
        if 1 not in self._messages:
            raise KeygenError("call round1() before round2()")
        config, params, session = self.config, self.config.params, self._session
        count = len(subsets(config.parties, config.threshold))
        ordered = self._collect(messages, Kind.KEYGEN_MESSAGE, "key generation round-1 message")
        seeds: dict[int, list[bytes]] = {k: [] for k in self._held}
        for sender, env in ordered:
            what = f"the round-1 message of member {sender}"
            commitments = [_hex32(x, what) for x in _list(env.meta, "commitments", count, what)]
            lengths = env.meta.integers("sealed", 0, 1 << 20, max_len=config.parties)
            if len(lengths) != config.parties or sum(lengths) != len(env.body):
                raise KeygenError(f"{what}: sealed sizes do not add up", sender)
            if sender == self.party:
                dealt = [self._own_seeds[k] for k in self._held]
            else:
                start = sum(lengths[: self.party])
                opened = self._identity.open_from(config.roster[sender],
                                                  bytes(env.body[start : start + lengths[self.party]]), what)
                aad = _box_aad(session, sender, self.party)
                if len(opened) != len(aad) + KEY_BYTES * len(self._held) or opened[: len(aad)] != aad:
                    raise KeygenError(f"{what}: the box sealed to member {self.party} is for another session or member",
                                      sender)
                body = opened[len(aad):]
                dealt = [body[KEY_BYTES * x : KEY_BYTES * (x + 1)] for x in range(len(self._held))]
            for k, seed in zip(self._held, dealt):
                if seed_commitment(seed, _seed_label(session, sender, k)) != commitments[k]:
                    raise KeygenError(f"{what}: a seed sealed to member {self.party} does not match its commitment; "
                                      f"member {sender} dealt inconsistently", sender)
                seeds[k].append(seed)
        a = common_polynomial(config.seed, params)
        for k in self._held:
            s_k = np.zeros(params.n, dtype=np.int16)
            e_k = np.zeros(params.n, dtype=np.int16)
            for dealer, seed in enumerate(seeds[k]):
                label = _seed_label(session, ordered[dealer][0], k)
                s_k += expand_ternary(seed, label, params.n)
                e_k += expand_error(seed, label, params.n)
            self._subsecrets[k] = s_k.astype(np.int8)
            self._pieces[k] = public_piece(s_k, e_k, a, params)
            self._commitments[k] = _piece_commitment(session, k, self._pieces[k])
            s_k.fill(0)
            e_k.fill(0)
        self._own_seeds = {}
        self._transcripts.append(_transcript(b"he_agg.keygen.round1\0", [m for _, m in self._raw(ordered)]))
        meta = {"session": session.hex(), "sender": self.party, "transcript": self._transcripts[0].hex(),
                "commitments": {str(k): self._commitments[k].hex() for k in self._held}}
        self._messages[2] = seal_signed(Kind.KEYGEN_COMMITMENTS, meta, b"", self._identity)
        return self._messages[2]

    # -- round 3 -----------------------------------------------------------------------------

    def round3(self, messages: Sequence[bytes]) -> bytes:
        """Check every member committed consistently; reveal the pieces this member is designated for."""
        if 3 in self._messages:
            return self._messages[3]
        if 2 not in self._messages:
            raise KeygenError("call round2() before round3()")
        config, session = self.config, self._session
        ordered = self._collect(messages, Kind.KEYGEN_COMMITMENTS, "key generation round-2 message")
        agreed: dict[int, bytes] = {}
        for sender, env in ordered:
            what = f"the round-2 message of member {sender}"
            self._check_transcript(env.meta, 0, what)
            raw = env.meta.raw("commitments")
            expected = held_subsets(sender, config.parties, config.threshold)
            if not isinstance(raw, dict) or sorted(raw) != sorted(str(k) for k in expected):
                raise KeygenError(f"{what}: must commit to exactly the subsets member {sender} holds", sender)
            for k in expected:
                commitment = _hex32(raw[str(k)], what)
                if k in self._commitments and commitment != self._commitments[k]:
                    raise KeygenError(f"{what}: its public-key piece for subset {k} differs from the one the dealt "
                                      f"seeds give", sender)
                if agreed.setdefault(k, commitment) != commitment:
                    raise KeygenError(f"the holders of subset {k} committed to different public-key pieces; this "
                                      "member does not hold it and cannot tell who is at fault", None)
        self._agreed = agreed
        self._transcripts.append(_transcript(b"he_agg.keygen.round2\0", [m for _, m in self._raw(ordered)]))
        designated = self._designated()
        meta = {"session": session.hex(), "sender": self.party, "transcript": self._transcripts[1].hex(),
                "subsets": designated}
        body = b"".join(self._pieces[k].tobytes() for k in designated)
        self._messages[3] = seal_signed(Kind.KEYGEN_REVEAL, meta, body, self._identity)
        return self._messages[3]

    def _designated(self) -> list[int]:
        config = self.config
        return [k for k in self._held if min(holders(subsets(config.parties, config.threshold)[k], config.parties))
                == self.party]

    # -- finish ------------------------------------------------------------------------------

    def finish(self, messages: Sequence[bytes], policy: Policy | None = None) -> KeyShare:
        """Check the revealed pieces against their commitments; return this member's key share."""
        if self._result is not None:
            return self._result
        if 3 not in self._messages:
            raise KeygenError("call round3() before finish()")
        config, params, session = self.config, self.config.params, self._session
        ordered = self._collect(messages, Kind.KEYGEN_REVEAL, "key generation round-3 message")
        shape = (len(params.moduli), params.n)
        pk0 = np.zeros(shape, dtype=np.uint64)
        revealed: set[int] = set()
        for sender, env in ordered:
            what = f"the round-3 message of member {sender}"
            self._check_transcript(env.meta, 1, what)
            expected = [k for k in held_subsets(sender, config.parties, config.threshold)
                        if min(holders(subsets(config.parties, config.threshold)[k], config.parties)) == sender]
            if env.meta.integers("subsets", 0, 1 << 16, max_len=len(expected) + 1) != expected:
                raise KeygenError(f"{what}: must reveal exactly the pieces member {sender} is designated for", sender)
            if len(env.body) != 8 * len(expected) * shape[0] * shape[1]:
                raise KeygenError(f"{what}: {len(env.body)} bytes of pieces, expected {len(expected)} pieces", sender)
            pieces = np.array(body_words(env.body, (len(expected),) + shape, what)) if expected else None
            for x, k in enumerate(expected):
                assert pieces is not None
                seal.check_residues(pieces[x], params.moduli, f"{what}, piece {k}")
                if _piece_commitment(session, k, pieces[x]) != self._agreed[k]:
                    raise KeygenError(f"{what}: the revealed piece for subset {k} does not match the commitments of "
                                      "its holders", sender)
                kernels.add(pk0, pk0, pieces[x], params.moduli)
                revealed.add(k)
        if revealed != set(range(len(subsets(config.parties, config.threshold)))):
            raise KeygenError("some public-key pieces were not revealed", None)
        self._transcripts.append(_transcript(b"he_agg.keygen.round3\0", [m for _, m in self._raw(ordered)]))
        a = common_polynomial(config.seed, params)
        context = PublicContext(params, np.stack([pk0, a]), parties=config.parties, threshold=config.threshold,
                                roster=config.roster, colluders=config.colluders,
                                secret_terms=config.parties * len(subsets(config.parties, config.threshold)),
                                statistical_bits=config.statistical_bits,
                                transcript=_transcript(b"he_agg.keygen.v2\0", [session] + self._transcripts))
        self._result = KeyShare(context, self.party, self._identity, self._subsecrets, fresh_key(), policy)
        for array in self._subsecrets.values():
            array.fill(0)
        self._subsecrets = {}
        return self._result

    # -- helpers -----------------------------------------------------------------------------

    def _collect(self, messages: Sequence[bytes], kind: Kind, what: str) -> list[tuple[int, object]]:
        """Verify signatures and session; one message per member, ordered by sender."""
        config = self.config
        if len(messages) != config.parties:
            raise KeygenError(f"key generation needs one {what} from each of the {config.parties} members, "
                              f"got {len(messages)}", None)
        by_sender: dict[int, tuple[object, bytes]] = {}
        for index, message in enumerate(messages):
            label = f"{what} {index}"

            def signer(meta: Meta, label: str = label) -> bytes:
                return config.roster[meta.integer("sender", 0, config.parties - 1)]

            env = open_signed(message, kind, label, signer)
            if env.meta.hexbytes("session", 32) != self._session:
                raise ParameterMismatchError(f"{label}: belongs to another key generation session")
            sender = env.meta.integer("sender", 0, config.parties - 1)
            if sender in by_sender:
                raise FormatError(f"{label}: member {sender} sent two messages")
            by_sender[sender] = (env, bytes(message))
        self._raw_messages = {s: m for s, (_, m) in by_sender.items()}
        return [(s, by_sender[s][0]) for s in sorted(by_sender)]  # type: ignore[misc]

    def _raw(self, ordered: list[tuple[int, object]]) -> list[tuple[int, bytes]]:
        return [(s, self._raw_messages[s]) for s, _ in ordered]

    def _check_transcript(self, meta: Meta, index: int, what: str) -> None:
        if meta.hexbytes("transcript", 32) != self._transcripts[index]:
            raise KeygenError(f"{what}: saw different messages in an earlier round than this member did "
                              "(the relay showed members different messages)", None)

    def __repr__(self) -> str:
        return f"KeygenParty(member {self.party} of {self.config.parties}, t={self.config.threshold})"


def _list(meta: Meta, key: str, length: int, what: str) -> list[object]:
    raw = meta.raw(key)
    if not isinstance(raw, list) or len(raw) != length:
        raise FormatError(f"{what}: {key} must be a list of {length} entries")
    return raw


def _hex32(value: object, what: str) -> bytes:
    if not isinstance(value, str) or len(value) != 64:
        raise FormatError(f"{what}: expected 32 bytes of hex")
    try:
        return bytes.fromhex(value)
    except ValueError:
        raise FormatError(f"{what}: not hex") from None
