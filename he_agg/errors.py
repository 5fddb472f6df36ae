"""The exceptions he_agg raises: one root, a few specific branches.

Every error caused by bad input also subclasses :class:`ValueError`, so generic callers
that already catch ``ValueError`` keep working. Messages say what was wrong and, where
it helps, what to do; they never contain key material.
"""

from __future__ import annotations


class HeAggError(Exception):
    """Root of every exception raised by he_agg."""


# -- parameters --------------------------------------------------------------------------


class ParameterError(HeAggError, ValueError):
    """Encryption parameters that are invalid or below the 128-bit security bound."""


class ParameterMismatchError(HeAggError, ValueError):
    """Input made for other parameters (N, primes, scale, level) than expected."""


# -- bytes from other parties ------------------------------------------------------------


class FormatError(HeAggError, ValueError):
    """Bytes that do not parse: bad magic or version, truncation, inconsistent sizes."""


class ChecksumError(FormatError):
    """A he_agg wire object whose checksum does not match its contents."""


class ResourceLimitError(FormatError):
    """Input that would cost more than a fixed cap (length, segments, nesting) to process."""


class AuthenticationError(FormatError):
    """A signature or sealed message that does not verify: forged, tampered or misaddressed."""


class ResidueRangeError(FormatError):
    """A residue is not below its prime: the data is corrupt or forged."""


class UnsupportedCiphertextError(FormatError):
    """A well-formed ciphertext of a kind he_agg does not sum (size 3, seeded, not NTT)."""


class LayoutMismatchError(ParameterMismatchError):
    """An encrypted update whose layout manifest differs from the round's layout."""


class PackingMismatchError(LayoutMismatchError):
    """An update packed one way ("slots" / "dense") offered to a round packed the other way."""


# -- packing and decoding ---------------------------------------------------------------


class PackingError(HeAggError, ValueError):
    """Data that cannot be packed into slots: empty, non-numeric, complex or non-finite."""


class SlotRangeError(PackingError):
    """A slot value beyond the bound that keeps the aggregate decryptable."""

    def __init__(self, message: str, index: int, bound: float) -> None:
        super().__init__(message)
        self.index = index
        self.bound = bound


class DecodeError(HeAggError, ValueError):
    """A decrypted aggregate that does not decode (a count far from an integer, a total
    weight that is not positive): the aggregate is corrupt or its noise too large."""


# -- aggregation rounds ------------------------------------------------------------------


class AggregationError(HeAggError):
    """A submission the aggregator refuses (duplicate client, wrong round, closed round)."""


class DuplicateContributionError(AggregationError, ValueError):
    """A second submission from a client id that already contributed to this round."""


class RoundMismatchError(AggregationError, ValueError):
    """A submission, request or share made for another round."""


# -- threshold decryption ----------------------------------------------------------------


class ThresholdError(HeAggError):
    """Threshold decryption failed: missing, unbound or inconsistent shares."""


class ShareBindingError(ThresholdError, ValueError):
    """A decryption share made for another ciphertext, active set or round."""


class InconsistentShareError(ThresholdError):
    """Decryption shares that disagree beyond the noise bound; names the suspect party."""

    def __init__(self, message: str, party: int | None) -> None:
        super().__init__(message)
        self.party = party


class PolicyError(HeAggError):
    """A key share refused to make a decryption share: its policy forbids the request."""


class TooFewContributorsError(PolicyError):
    """The request names fewer distinct contributors than the policy's min_clients."""


class ReplayError(PolicyError):
    """A different request for a round this key share has already answered."""


class BudgetExhaustedError(PolicyError):
    """The key share has used its decryption budget."""


class VerificationError(PolicyError):
    """Recomputing the sum from the contributions does not give the requested digest."""


class EquivocationError(ReplayError):
    """A member was asked to approve a second, different statement for a round it approved."""


class QuorumError(PolicyError):
    """A request without a valid quorum certificate: too few, duplicate or invalid approvals."""


class NotEnrolledError(PolicyError):
    """A request names a client that is not enrolled with this member, or was revoked."""


class TicketError(PolicyError):
    """A client's signed ticket that is missing, forged or does not match the request."""


class PrivacyBudgetError(BudgetExhaustedError):
    """A release that would exceed the member's flooding (statistical-distance) budget."""


# -- key generation and enrollment -------------------------------------------------------


class KeygenError(ThresholdError):
    """Key generation cannot finish: a message is missing, inconsistent or not authentic.

    ``party`` names the party whose *own signed* message proves the fault, or is None
    when the fault cannot be attributed (a relay may be the cause)."""

    def __init__(self, message: str, party: int | None = None) -> None:
        super().__init__(message)
        self.party = party


class EnrollmentError(HeAggError, ValueError):
    """An enrollment refused: ``client_id`` names the client whose dealing is at fault."""

    def __init__(self, message: str, client_id: str | None = None) -> None:
        super().__init__(message)
        self.client_id = client_id


class ClientStateError(HeAggError):
    """A client asked to encrypt twice for one round, or for a round that went backwards."""


# -- persisted state ---------------------------------------------------------------------


class StateError(HeAggError):
    """Persisted member or round state that cannot be read, locked or durably written."""


class InsecureFileError(HeAggError, PermissionError):
    """A secret file readable by others, or a request to write secrets unprotected."""


# -- command line -------------------------------------------------------------------------


class UsageError(HeAggError, ValueError):
    """Options that cannot work together (the message says what to change)."""


# -- the native core ---------------------------------------------------------------------


class NativeCoreError(HeAggError):
    """The native core is unavailable or reported an internal failure."""
