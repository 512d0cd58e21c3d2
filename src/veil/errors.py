"""One error hierarchy for veil, split by who is at fault.

Every error veil raises on purpose derives from :class:`VeilError`. The subclasses say
whose fault it is, so callers can react (fix a config, drop a misbehaving peer, stop a
run that spent its budget) without parsing messages. Messages say what was wrong and how
to fix it; they never contain keys, seeds, shares or raw updates.
"""

from __future__ import annotations

__all__ = [
    "VeilError",
    "ConfigError",
    "DataError",
    "LocalError",
    "PeerError",
    "ProtocolError",
    "PeerTimeoutError",
    "MalformedMessageError",
    "IntegrityError",
    "AbortError",
    "BudgetExceededError",
    "InsecureParametersError",
    "InvalidUpdateError",
    "OutputError",
    "RunLockedError",
]


class VeilError(Exception):
    """Root of every error veil raises on purpose."""


class ConfigError(VeilError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or impossible.

    Attributes:
        key: dotted path of the offending key (``"federation.cohort_size"``), if known.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


class DataError(VeilError):
    """A data set is missing, unreadable or malformed (the message says how to fix it)."""


class LocalError(VeilError):
    """This party did something wrong (a bug or misuse of the API on the local side)."""


class PeerError(VeilError):
    """A remote party (site, server, compute party) misbehaved.

    Attributes:
        peer: identifier of the party at fault, if known.
    """

    def __init__(self, message: str, peer: object | None = None) -> None:
        self.peer = peer
        super().__init__(message if peer is None else f"peer {peer}: {message}")


class ProtocolError(PeerError):
    """A message arrived that the protocol state machine does not allow in its state."""


class PeerTimeoutError(PeerError):
    """A peer sent nothing before a deadline (silent, slow or gone); ``peer`` names it."""


class MalformedMessageError(PeerError):
    """A message could not be decoded: truncated, oversized, wrong type or shape."""


class IntegrityError(PeerError):
    """Authenticated decryption failed, or a replayed / tampered message was detected."""


class AbortError(VeilError):
    """A protocol round cannot complete (for example fewer survivors than the threshold).

    No partial result is released when this is raised.
    """


class BudgetExceededError(VeilError):
    """Running (or continuing) would spend more privacy budget than allowed."""


class InsecureParametersError(ConfigError):
    """Cryptographic or privacy parameters below the required security level."""


class InvalidUpdateError(PeerError):
    """A site's update is unusable (NaN/inf values, wrong shape or dtype)."""


class OutputError(VeilError):
    """An output file or directory cannot be written (read-only, full, not a directory).

    Attributes:
        path: the file or directory that could not be written.
    """

    def __init__(self, message: str, path: object | None = None) -> None:
        self.path = path
        super().__init__(message)


class RunLockedError(OutputError):
    """Another process is writing the same run directory (one writer per run directory)."""
