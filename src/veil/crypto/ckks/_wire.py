"""Framing of CKKS objects on the wire, and the bridge to SEAL's (file-based) serialisation.

TenSEAL's low-level SEAL binding saves and loads objects through file paths only; veil moves
them through a private temporary directory (mode 0700, on ``/dev/shm`` when it exists) and
hands out bytes. Only public objects ever take this path — ciphertexts, public, relinearisation
and Galois keys; no function here accepts a secret key.

Frame format (all integers big-endian)::

    magic "VCKS" | version u8 | kind u8 | key_id 16 bytes | count u32 | count x (len u64 | bytes)

The key id names the key pair the payload belongs to (a SHA-256 of the parameters and the
public key), so a ciphertext meant for another key is refused before SEAL sees it. CKKS gives
no integrity: the id catches mistakes and foreign data, not an active forger (the FHE threat
model is semi-honest).
"""

from __future__ import annotations

import os
import struct
import tempfile
import threading
from collections.abc import Callable, Sequence
from typing import Any

from veil.errors import IntegrityError, MalformedMessageError

__all__ = ["KIND_CIPHERTEXTS", "KIND_EVAL_KEYS", "pack_frames", "unpack_frames", "seal_save", "seal_load"]

MAGIC = b"VCKS"
VERSION = 1
KIND_CIPHERTEXTS = 1
KIND_EVAL_KEYS = 2
KEY_ID_BYTES = 16
_HEADER = struct.Struct(">4sBB16sI")
_LEN = struct.Struct(">Q")
MAX_FRAMES = 1 << 20

_dir_lock = threading.Lock()
_dir: list[str] = []
_counter = [0]


def _scratch_path() -> str:
    with _dir_lock:
        if not _dir:
            base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
            _dir.append(tempfile.mkdtemp(prefix="veil-ckks-", dir=base))  # mode 0700
        _counter[0] += 1
        return os.path.join(_dir[0], f"{os.getpid()}-{threading.get_ident()}-{_counter[0]}")


def seal_save(obj: Any) -> bytes:
    """Bytes of a public SEAL object (ciphertext, public/relin/Galois keys, serializable).

    Raises:
        TypeError: if handed a secret key (a bug: secret keys are never serialised).
    """
    if type(obj).__name__ == "SecretKey":
        raise TypeError("veil never serialises a CKKS secret key")
    path = _scratch_path()
    try:
        obj.save(path)
        with open(path, "rb") as f:
            return f.read()
    finally:
        if os.path.exists(path):
            os.remove(path)


def seal_load(make: Callable[[], Any], context: Any, data: bytes, what: str) -> Any:
    """Load a SEAL object of the type ``make()`` returns from ``data``, valid for ``context``.

    Raises:
        MalformedMessageError: if the bytes do not decode to a valid object for this context
            (truncated, corrupted, or made under other parameters).
    """
    path = _scratch_path()
    obj = make()
    try:
        with open(path, "wb") as f:
            f.write(data)
        obj.load(context, path)
    except Exception as e:  # SEAL raises ValueError/RuntimeError with C++ messages
        raise MalformedMessageError(
            f"{what}: not a valid object for these CKKS parameters ({type(e).__name__})"
        ) from None
    finally:
        if os.path.exists(path):
            os.remove(path)
    return obj


def pack_frames(kind: int, key_id: bytes, frames: Sequence[bytes]) -> bytes:
    """Frame ``frames`` under a header naming ``kind`` and the key id."""
    if len(key_id) != KEY_ID_BYTES:
        raise ValueError("key id must be 16 bytes")
    parts = [_HEADER.pack(MAGIC, VERSION, kind, key_id, len(frames))]
    for fr in frames:
        parts.append(_LEN.pack(len(fr)))
        parts.append(bytes(fr))
    return b"".join(parts)


def unpack_frames(blob: bytes, kind: int, key_id: bytes | None, what: str) -> tuple[bytes, list[bytes]]:
    """Split a framed blob; returns ``(key_id, frames)``.

    Raises:
        MalformedMessageError: bad magic/version/kind, truncated or trailing bytes.
        IntegrityError: ``key_id`` given and the blob names another key.
    """
    blob = bytes(blob)
    if len(blob) < _HEADER.size:
        raise MalformedMessageError(f"{what}: truncated header ({len(blob)} bytes)")
    magic, version, got_kind, got_id, count = _HEADER.unpack_from(blob, 0)
    if magic != MAGIC or version != VERSION:
        raise MalformedMessageError(f"{what}: not a veil CKKS message (bad magic or version)")
    if got_kind != kind:
        raise MalformedMessageError(f"{what}: message kind {got_kind}, expected {kind}")
    if key_id is not None and got_id != key_id:
        raise IntegrityError(
            f"{what}: made under another CKKS key (key id {got_id.hex()[:8]}..., expected "
            f"{key_id.hex()[:8]}...)"
        )
    if count > MAX_FRAMES:
        raise MalformedMessageError(f"{what}: {count} frames is more than {MAX_FRAMES}")
    off = _HEADER.size
    frames = []
    for i in range(count):
        if off + _LEN.size > len(blob):
            raise MalformedMessageError(f"{what}: truncated before frame {i}")
        (n,) = _LEN.unpack_from(blob, off)
        off += _LEN.size
        if off + n > len(blob):
            raise MalformedMessageError(f"{what}: frame {i} truncated ({len(blob) - off} of {n} bytes)")
        frames.append(blob[off : off + n])
        off += n
    if off != len(blob):
        raise MalformedMessageError(f"{what}: {len(blob) - off} trailing bytes")
    return got_id, frames
