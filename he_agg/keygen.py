"""Key generation for a t-of-n committee: a trusted dealer, or dealer-free rounds.

Dealer (:func:`deal`, one process, for simulations and tests): samples one ternary
secret s and error e, publishes pk = (−(a·s + e), a), Shamir-shares s, wipes s and e.

Dealer-free (:class:`KeygenParty`, one object per party, bytes in / bytes out):

* set-up: a coordinator makes a :class:`KeygenConfig` — parameters, t, the roster of
  the n parties' X25519 public keys (:class:`PartyIdentity`, distributed authentically
  out of band) and a fresh public seed for the common polynomial a;
* round 1 — each party i samples s_i (ternary) and e_i, and broadcasts one message: its
  public-key share pk0_i = −(a·s_i + e_i) and, for every other party j, the Shamir share
  f_i(x_j) of s_i sealed to j with ``nacl.public.Box`` (X25519 + XSalsa20-Poly1305:
  confidential to j and authenticated as coming from i);
* finish — each party checks all n messages, opens the boxes addressed to it and sums
  the shares into its key share Σ_i f_i(x_j); everybody sums pk0 = Σ pk0_i.

The collective secret s = Σ s_i exists nowhere: no code path in he_agg assembles it.
All n parties must take part in key generation; any t of them can later decrypt.
Threat model: honest-but-curious parties (no verifiable secret sharing).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Sequence

import blake3
import numpy as np
from nacl.exceptions import CryptoError
from nacl.public import Box, PrivateKey, PublicKey

from .context import MAX_PARTIES, PublicContext
from .errors import FormatError, ParameterMismatchError, ThresholdError
from .hazmat import kernels
from .hazmat.rlwe import common_polynomial, public_key_share, sample_secret
from .hazmat.sampling import KeyedStream, fresh_key
from .hazmat.shamir import deal as shamir_deal
from .hazmat.wire import seal
from .hazmat.wire.envelope import Kind, body_words, open_envelope, seal_envelope
from .keyshare import KeyShare, Policy
from .params import Params

__all__ = ["KeygenConfig", "KeygenParty", "PartyIdentity", "deal"]


# -- trusted dealer ----------------------------------------------------------------------


def deal(params: Params, parties: int, threshold: int, *, policy: Policy | None = None,
         statistical_bits: int = 40) -> tuple[PublicContext, list[KeyShare]]:
    """A committee from a trusted dealer in this process; the dealer's secret is wiped."""
    if not 1 <= threshold <= parties <= MAX_PARTIES:
        raise ValueError(f"need 1 <= t <= n <= {MAX_PARTIES}, got t={threshold}, n={parties}")
    stream = KeyedStream.fresh(b"he_agg.dealer")
    a = common_polynomial(fresh_key(), params)
    secret = sample_secret(stream, params)
    try:
        pk0 = public_key_share(secret, a, stream, params)
        data_secret = np.ascontiguousarray(secret[: len(params.data_moduli)])
        shares = shamir_deal(data_secret, params.data_moduli, parties, threshold, stream)
        data_secret.fill(0)
    finally:
        secret.fill(0)
    context = PublicContext(params, np.stack([pk0, a]), parties=parties, threshold=threshold,
                            secret_terms=1, statistical_bits=statistical_bits)
    key_shares = [KeyShare(context, i, share, fresh_key(), policy) for i, share in enumerate(shares)]
    for share in shares:
        share.fill(0)
    return context, key_shares


# -- dealer-free -------------------------------------------------------------------------


class PartyIdentity:
    """A party's long-term X25519 key pair for sealing key-generation messages."""

    __slots__ = ("_private",)

    def __init__(self, private: PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> "PartyIdentity":
        return cls(PrivateKey(fresh_key()))

    @classmethod
    def from_private_bytes(cls, data: bytes) -> "PartyIdentity":
        return cls(PrivateKey(bytes(data)))

    def private_bytes(self) -> bytes:
        """The raw private key, for the caller to store securely."""
        return bytes(self._private)

    @property
    def public_key(self) -> bytes:
        return bytes(self._private.public_key)

    def __repr__(self) -> str:
        return f"PartyIdentity(public {self.public_key[:6].hex()}…)"

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a PartyIdentity cannot be pickled; store private_bytes() securely")


@dataclass(frozen=True)
class KeygenConfig:
    """Everything the n parties must agree on before round 1 (all public)."""

    params: Params
    threshold: int
    roster: tuple[bytes, ...]  # X25519 public keys, party i at index i
    seed: bytes  # expands into the common polynomial a
    statistical_bits: int = 40

    def __post_init__(self) -> None:
        if not 1 <= self.threshold <= len(self.roster) <= MAX_PARTIES:
            raise ValueError(f"need 1 <= t <= n <= {MAX_PARTIES}, got t={self.threshold}, n={len(self.roster)}")
        if any(len(key) != 32 for key in self.roster) or len(set(self.roster)) != len(self.roster):
            raise ValueError("the roster must list distinct 32-byte X25519 public keys")
        if len(self.seed) != 32:
            raise ValueError("the seed is 32 bytes")

    @classmethod
    def new(cls, params: Params, threshold: int, roster: Sequence[bytes], *, statistical_bits: int = 40) -> "KeygenConfig":
        """A configuration with a fresh random seed (the coordinator's job)."""
        return cls(params, threshold, tuple(bytes(k) for k in roster), fresh_key(), statistical_bits)

    @property
    def parties(self) -> int:
        return len(self.roster)

    @property
    def session_id(self) -> bytes:
        header = struct.pack("<HHH", self.parties, self.threshold, self.statistical_bits)
        return blake3.blake3(b"he_agg.keygen.v1\0" + self.params.fingerprint + header + self.seed
                             + b"".join(self.roster)).digest()


def _share_aad(config: KeygenConfig, sender: int, recipient: int) -> bytes:
    return config.session_id + struct.pack("<HH", sender, recipient)


class KeygenParty:
    """One party's side of dealer-free key generation: ``round1()`` then ``finish(messages)``."""

    def __init__(self, config: KeygenConfig, party: int, identity: PartyIdentity) -> None:
        if not 0 <= party < config.parties:
            raise ValueError(f"party must be in [0, {config.parties})")
        if identity.public_key != config.roster[party]:
            raise ValueError(f"this identity is not the roster's party {party}")
        self.config = config
        self.party = party
        self._identity = identity
        self._own_share: np.ndarray | None = None
        self._message: bytes | None = None

    def round1(self) -> bytes:
        """Sample s_i and e_i; return the broadcast message (public key share + sealed shares)."""
        if self._message is not None:
            return self._message  # a retry re-sends the same message, never fresh secrets
        config, params = self.config, self.config.params
        stream = KeyedStream.fresh(b"he_agg.keygen.party")
        secret = sample_secret(stream, params)
        try:
            pk0 = public_key_share(secret, common_polynomial(config.seed, params), stream, params)
            data_secret = np.ascontiguousarray(secret[: len(params.data_moduli)])
            shares = shamir_deal(data_secret, params.data_moduli, config.parties, config.threshold, stream)
            data_secret.fill(0)
        finally:
            secret.fill(0)
        sealed = []
        for j, share in enumerate(shares):
            if j == self.party:
                self._own_share = share
                sealed.append(b"")
                continue
            box = Box(self._identity._private, PublicKey(config.roster[j]))
            sealed.append(bytes(box.encrypt(_share_aad(config, self.party, j) + share.tobytes())))
            share.fill(0)
        meta = {"session": config.session_id.hex(), "sender": self.party, "sealed": [len(s) for s in sealed]}
        body = np.concatenate([pk0.reshape(-1).view(np.uint8), np.frombuffer(b"".join(sealed), dtype=np.uint8)])
        self._message = seal_envelope(Kind.KEYGEN_MESSAGE, meta, body)
        return self._message

    def finish(self, messages: Sequence[bytes], policy: Policy | None = None) -> KeyShare:
        """Check all n round-1 messages, open this party's shares, return its key share."""
        if self._own_share is None:
            raise ThresholdError("call round1() before finish()")
        config, params = self.config, self.config.params
        nmod, n = len(params.data_moduli), params.n
        key_words = len(params.moduli) * n
        share_bytes = nmod * n * 8
        pk0 = np.zeros((len(params.moduli), n), dtype=np.uint64)
        total = self._own_share.copy()
        seen: set[int] = set()
        for index, message in enumerate(messages):
            what = f"key generation message {index}"
            env = open_envelope(message, Kind.KEYGEN_MESSAGE, what)
            if env.meta.hexbytes("session", 32) != config.session_id:
                raise ParameterMismatchError(f"{what}: belongs to another key generation session")
            sender = env.meta.integer("sender", 0, config.parties - 1)
            if sender in seen:
                raise FormatError(f"{what}: party {sender} sent two messages")
            seen.add(sender)
            lengths = env.meta.integers("sealed", 0, 1 << 30, max_len=config.parties)
            if len(lengths) != config.parties or 8 * key_words + sum(lengths) != len(env.body):
                raise FormatError(f"{what}: sizes do not add up")
            part = np.array(body_words(env.body[: 8 * key_words], (len(params.moduli), n), what))
            seal.check_residues(part, params.moduli, f"{what}, public key share")
            kernels.add(pk0, pk0, part, params.moduli)
            if sender == self.party:
                continue
            start = 8 * key_words + sum(lengths[: self.party])
            sealed = bytes(env.body[start : start + lengths[self.party]])
            try:
                opened = Box(self._identity._private, PublicKey(config.roster[sender])).decrypt(sealed)
            except CryptoError:
                raise FormatError(f"{what}: the share sealed to party {self.party} does not authenticate") from None
            aad = _share_aad(config, sender, self.party)
            if len(opened) != len(aad) + share_bytes or opened[: len(aad)] != aad:
                raise FormatError(f"{what}: the sealed share is for another session or party")
            piece = np.frombuffer(opened, dtype="<u8", offset=len(aad)).astype(np.uint64).reshape(nmod, n)
            seal.check_residues(piece, params.data_moduli, f"{what}, key share piece")
            kernels.add(total, total, piece, params.data_moduli)
            piece.fill(0)
        if seen != set(range(config.parties)):
            missing = sorted(set(range(config.parties)) - seen)
            raise ThresholdError(f"key generation needs a message from every party; missing {missing}")
        a = common_polynomial(config.seed, params)
        context = PublicContext(params, np.stack([pk0, a]), parties=config.parties, threshold=config.threshold,
                                secret_terms=config.parties, statistical_bits=config.statistical_bits)
        self._own_share.fill(0)
        key_share = KeyShare(context, self.party, total, fresh_key(), policy)
        total.fill(0)
        return key_share

    def __repr__(self) -> str:
        return f"KeygenParty(party {self.party} of {self.config.parties}, t={self.config.threshold})"
