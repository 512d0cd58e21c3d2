"""Equal-size messages: pad a message to a size fixed in advance, and strip it strictly.

A message's length can tell whoever moves it something about its content (how many
neighbours a site still has, how well an update compressed, how long a serialised
ciphertext came out). A protocol that pads every message of one type to one size known
to everybody before the round — a function of the public round parameters only — shows
the same length for every site and every input.

Frame: ``len u32 (little endian) ‖ message ‖ zero bytes`` of exactly ``size`` bytes.
:func:`unpad` refuses a frame of another size, a length field beyond the frame, or a fill
that is not all zeros, with :class:`~veil.errors.MalformedMessageError`, so padding cannot
carry a covert payload and a truncated or re-padded frame is not accepted.

Padding is applied to the plaintext, *before* any encryption: over TCP the padded frame is
what TLS 1.3 encrypts and authenticates (AES-GCM or ChaCha20-Poly1305 records), so the
ciphertext length is the padded length and a changed fill byte breaks the record's tag.
Ciphertexts that sites send each other through the server (SecAgg+ share ciphertexts)
must themselves have plaintexts of one fixed length; SecAgg+'s do by construction
(:data:`veil.protocols.secagg.messages.SHARE_PLAINTEXT`).

Example:
    >>> frame = pad(b"abc", 16)
    >>> len(frame), unpad(frame, 16)
    (16, b'abc')
"""

from __future__ import annotations

import struct

from veil.errors import LocalError, MalformedMessageError

__all__ = ["pad", "unpad", "padded_size", "OVERHEAD"]

_LEN = struct.Struct("<I")
#: bytes a frame adds to the message (the length field)
OVERHEAD = _LEN.size


def padded_size(bound: int) -> int:
    """Frame size for messages of at most ``bound`` bytes.

    Raises:
        LocalError: if ``bound`` is negative.
    """
    if bound < 0:
        raise LocalError(f"a message bound is non-negative, got {bound}")
    return bound + OVERHEAD


def pad(message: bytes, size: int) -> bytes:
    """``message`` in a frame of exactly ``size`` bytes.

    Raises:
        LocalError: if the message does not fit (the local side computed a wrong bound).
    """
    room = size - OVERHEAD
    if len(message) > room:
        raise LocalError(
            f"a message of {len(message)} bytes does not fit a padded frame of {size} bytes"
        )
    return _LEN.pack(len(message)) + bytes(message) + bytes(room - len(message))


def unpad(frame: bytes, size: int | None = None) -> bytes:
    """The message inside ``frame`` (which must be exactly ``size`` bytes, when given).

    Raises:
        MalformedMessageError: wrong frame size, a length beyond the frame, or a non-zero
            fill.
    """
    frame = bytes(frame)
    if size is not None and len(frame) != size:
        raise MalformedMessageError(
            f"padded frame of {len(frame)} bytes, this message type has {size}"
        )
    if len(frame) < OVERHEAD:
        raise MalformedMessageError("padded frame shorter than its length field")
    (n,) = _LEN.unpack_from(frame)
    if n > len(frame) - OVERHEAD:
        raise MalformedMessageError("padded frame's length field exceeds the frame")
    end = OVERHEAD + n
    if frame.count(0, end) != len(frame) - end:
        raise MalformedMessageError("padded frame's fill is not all zeros")
    return frame[OVERHEAD:end]
