"""Long-term identities of committee members and enrolled clients: one Ed25519 key each.

A party is known by its 32-byte Ed25519 verify key (the roster lists them). The same key
signs its protocol messages and — converted to X25519 — receives sealed secrets
(``nacl.public.Box``: confidential to the recipient, authenticated as the sender). Every
signature covers a domain-separation label, so a signature made for one message type can
never be replayed as another.
"""

from __future__ import annotations

from nacl.exceptions import BadSignatureError, CryptoError
from nacl.public import Box, PrivateKey, PublicKey
from nacl.signing import SigningKey, VerifyKey

from .errors import AuthenticationError, FormatError
from .hazmat.sampling import KEY_BYTES, fresh_key

__all__ = ["PartyIdentity", "check_public_key", "open_sealed", "seal_to", "verify_signature"]

SIGNATURE_BYTES = 64


def check_public_key(key: object, what: str = "public key") -> bytes:
    """A 32-byte Ed25519 verify key that is a valid curve point (ValueError otherwise)."""
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise ValueError(f"{what} must be {KEY_BYTES} bytes")
    try:
        VerifyKey(bytes(key)).to_curve25519_public_key()
    except Exception:  # nacl raises several types for points off the curve
        raise ValueError(f"{what} is not a valid Ed25519 public key") from None
    return bytes(key)


class PartyIdentity:
    """A party's long-term Ed25519 key pair (also used, as X25519, to receive sealed secrets)."""

    __slots__ = ("_signing",)

    def __init__(self, signing: SigningKey) -> None:
        self._signing = signing

    @classmethod
    def generate(cls) -> "PartyIdentity":
        return cls(SigningKey(fresh_key()))

    @classmethod
    def from_private_bytes(cls, data: object) -> "PartyIdentity":
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(bytes(data)) != KEY_BYTES:
            raise FormatError(f"a private identity is {KEY_BYTES} bytes")
        return cls(SigningKey(bytes(data)))

    def private_bytes(self) -> bytes:
        """The 32-byte seed of the key pair, for the caller to store securely."""
        return bytes(self._signing)

    @property
    def public_key(self) -> bytes:
        """The Ed25519 verify key: this party's name in rosters and registries."""
        return bytes(self._signing.verify_key)

    def sign(self, domain: bytes, message: bytes) -> bytes:
        """A 64-byte signature over ``domain ‖ message``."""
        return bytes(self._signing.sign(_signed(domain, message)).signature)

    def seal_to(self, recipient: bytes, plaintext: bytes) -> bytes:
        """``plaintext`` encrypted to ``recipient`` (a verify key), authenticated as from us."""
        return seal_to(self, recipient, plaintext)

    def open_from(self, sender: bytes, sealed: bytes, what: str) -> bytes:
        """Open a message ``sender`` sealed to us (AuthenticationError if it does not verify)."""
        return open_sealed(self, sender, sealed, what)

    def _box(self, peer: bytes) -> Box:
        peer_x = VerifyKey(peer).to_curve25519_public_key()
        return Box(PrivateKey(bytes(self._signing.to_curve25519_private_key())), PublicKey(bytes(peer_x)))

    def __repr__(self) -> str:
        return f"PartyIdentity(public {self.public_key[:6].hex()}…)"

    __str__ = __repr__

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("a PartyIdentity cannot be pickled; store private_bytes() securely")


def _signed(domain: bytes, message: bytes) -> bytes:
    return len(domain).to_bytes(2, "little") + domain + message


def verify_signature(public_key: bytes, domain: bytes, message: bytes, signature: bytes, what: str) -> None:
    """Check a signature made by :meth:`PartyIdentity.sign`; AuthenticationError naming ``what``."""
    if len(signature) != SIGNATURE_BYTES:
        raise AuthenticationError(f"{what}: a signature is {SIGNATURE_BYTES} bytes, got {len(signature)}")
    try:
        VerifyKey(bytes(public_key)).verify(_signed(domain, message), bytes(signature))
    except (BadSignatureError, ValueError, TypeError):
        raise AuthenticationError(f"{what}: the signature does not verify") from None


def seal_to(sender: PartyIdentity, recipient: bytes, plaintext: bytes) -> bytes:
    return bytes(sender._box(recipient).encrypt(plaintext))


def open_sealed(recipient: PartyIdentity, sender: bytes, sealed: bytes, what: str) -> bytes:
    try:
        return bytes(recipient._box(sender).decrypt(bytes(sealed)))
    except (CryptoError, ValueError, TypeError):
        raise AuthenticationError(f"{what}: the sealed message does not authenticate") from None
