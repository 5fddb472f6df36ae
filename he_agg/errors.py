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


class ResidueRangeError(FormatError):
    """A residue is not below its prime: the data is corrupt or forged."""


class UnsupportedCiphertextError(FormatError):
    """A well-formed ciphertext of a kind he_agg does not sum (size 3, seeded, not NTT)."""


class LayoutMismatchError(ParameterMismatchError):
    """An encrypted update whose layout manifest differs from the round's layout."""


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


# -- command line -------------------------------------------------------------------------


class UsageError(HeAggError, ValueError):
    """Options that cannot work together (the message says what to change)."""


# -- the native core ---------------------------------------------------------------------


class NativeCoreError(HeAggError):
    """The native core is unavailable or reported an internal failure."""
