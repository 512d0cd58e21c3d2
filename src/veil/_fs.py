"""Safe output files: one writer per run directory, atomic writes, JSON without NaN.

* :class:`RunLock` — an exclusive ``flock`` on ``RUN_DIR/.veil.lock``; a second process
  (or a second lock in the same process) gets :class:`~veil.errors.RunLockedError` naming
  the holder. The kernel drops the lock when the holder exits, even when it is killed, so
  a stale lock cannot block a later run. (POSIX file locks; on network file systems they
  are only as good as the server's lock support.)
* :func:`atomic_write` / :func:`write_json_atomic` — write a temp file in the same
  directory, ``fsync``, then rename over the target: a reader sees the old file or the new
  one, never half of one.
* :func:`json_safe` — NaN and ±inf become ``null`` (JSON has no such numbers; Python's
  ``NaN`` literal breaks every strict JSON reader), numpy values become plain numbers.
* Every ``OSError`` from a read-only, full or missing output location becomes
  :class:`~veil.errors.OutputError` saying what to fix.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import math
import os
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from veil.errors import OutputError, RunLockedError

__all__ = [
    "RunLock",
    "LOCK_FILE",
    "atomic_write",
    "write_json_atomic",
    "json_safe",
    "dumps_json",
    "ensure_writable_dir",
    "output_error",
]

LOCK_FILE = ".veil.lock"


def output_error(e: OSError, path: os.PathLike[str] | str, doing: str = "write") -> OutputError:
    """An :class:`OutputError` for ``e`` that says what to fix."""
    p = Path(path)
    code = e.errno
    if code in (errno.EROFS,):
        why = "the file system is read-only; choose another output_dir"
    elif code in (errno.EACCES, errno.EPERM):
        why = "permission denied; choose an output_dir you can write, or fix its permissions"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        why = "no space left on the device (or quota exceeded); free space or choose another "
        why += "output_dir"
    elif code == errno.ENOTDIR:
        why = "a parent of it is a file, not a directory; choose another output_dir or name"
    elif code == errno.EISDIR:
        why = "it is a directory"
    elif code == errno.ENOENT:
        why = "a parent directory does not exist"
    else:
        why = e.strerror or type(e).__name__
    return OutputError(f"cannot {doing} {p}: {why}", path=p)


def ensure_writable_dir(directory: os.PathLike[str] | str) -> Path:
    """Create ``directory`` (with parents) and check a file can be written in it.

    Call this before a long job starts, so a read-only or full output location fails
    at once rather than after the work is done.

    Raises:
        OutputError: the directory cannot be created or written.
    """
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True)
        if not d.is_dir():
            raise OutputError(f"cannot write {d}: it exists and is not a directory", path=d)
        fd, probe = tempfile.mkstemp(prefix=".veil-probe-", dir=d)
        try:
            os.write(fd, b"ok")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except FileExistsError:
        raise OutputError(f"cannot write {d}: it exists and is not a directory", path=d) from None
    except OSError as e:
        raise output_error(e, d) from None
    return d


@contextlib.contextmanager
def atomic_write(path: os.PathLike[str] | str) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it is fsynced and renamed over ``path``.

    Example:
        >>> with atomic_write(run_dir / "model.pt") as tmp:   # doctest: +SKIP
        ...     torch.save(state, tmp)

    Raises:
        OutputError: the directory is read-only, full, or not a directory. The target is
            left as it was and the temp file is removed.
    """
    p = Path(path)
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
        os.close(fd)
    except OSError as e:
        raise output_error(e, p) from None
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, p)
        _fsync_dir(p.parent)
    except OSError as e:
        _unlink_quietly(tmp)
        raise output_error(e, p) from None
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(p: Path) -> None:
    with contextlib.suppress(OSError):
        p.unlink()


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a directory; the rename is still atomic
    finally:
        os.close(fd)


def json_safe(obj: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``obj`` as plain JSON values: non-finite floats → ``None``, numpy → Python, tuples and
    sets → lists, paths → strings, non-string keys → strings.

    Args:
        obj: the value.
        default: called on a value with no JSON form (e.g. ``str``); its result is made
            safe in turn. Without it such a value is an error.

    Raises:
        TypeError: a value with no JSON form and no ``default`` (the message names where).
    """
    return _safe(obj, "$", default)


def _safe(o: Any, where: str, default: Callable[[Any], Any] | None = None) -> Any:
    if o is None or isinstance(o, (bool, str)):
        return o
    if isinstance(o, int):
        return int(o)
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {str(k): _safe(v, f"{where}.{k}", default) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_safe(v, f"{where}[{i}]", default) for i, v in enumerate(o)]
    if isinstance(o, (set, frozenset)):
        return [_safe(v, f"{where}[]", default) for v in sorted(o, key=repr)]
    if isinstance(o, os.PathLike):
        return os.fspath(o)
    mod = type(o).__module__
    if (mod == "numpy" or mod.startswith(("numpy.", "torch"))) and hasattr(o, "tolist"):
        return _safe(o.tolist(), where, default)
    if isinstance(o, (_dt.datetime, _dt.date)):
        return o.isoformat()
    if default is not None:
        return _safe(default(o), where, None)
    raise TypeError(f"{where}: {type(o).__name__} has no JSON form")


def dumps_json(
    obj: Any, indent: int | None = 1, default: Callable[[Any], Any] | None = None
) -> str:
    """Strict JSON text of :func:`json_safe` ``(obj, default)`` (never a ``NaN`` literal)."""
    return json.dumps(json_safe(obj, default), indent=indent, allow_nan=False,
                      ensure_ascii=False)


def write_json_atomic(
    path: os.PathLike[str] | str,
    obj: Any,
    indent: int | None = 1,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """Write ``obj`` as strict JSON to ``path`` atomically (see :func:`json_safe`).

    Raises:
        OutputError: the location cannot be written.
        TypeError: ``obj`` holds a value with no JSON form and ``default`` is None.
    """
    text = dumps_json(obj, indent, default)  # before touching the file
    p = Path(path)
    with atomic_write(p) as tmp:
        tmp.write_text(text + "\n", encoding="utf-8")
    return p


class RunLock:
    """Exclusive lock on a run directory: one writer at a time.

    Args:
        run_dir: the run directory (created if missing).

    Example:
        >>> with RunLock(cfg.run_dir()):        # doctest: +SKIP
        ...     train(...)

    Raises:
        RunLockedError: (from :meth:`acquire`) another process holds the directory.
        OutputError: the directory cannot be created or the lock file written.
    """

    def __init__(self, run_dir: os.PathLike[str] | str) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_FILE
        self._fd: int | None = None

    def __repr__(self) -> str:
        return f"RunLock({str(self.run_dir)!r}, held={self.held})"

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def holder(self) -> dict[str, Any]:
        """Who wrote the lock file last (pid, host, since); ``{}`` if unknown."""
        try:
            info = json.loads(self.path.read_text(encoding="utf-8") or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _wait_for_holder_info(self, timeout_s: float = 0.5) -> dict[str, Any]:
        # The holder writes who it is just after taking the lock; give it a moment.
        import time

        deadline = time.monotonic() + timeout_s
        while True:
            h = self.holder()
            if h or time.monotonic() >= deadline:
                return h
            time.sleep(0.02)

    def acquire(self) -> RunLock:
        """Take the lock without waiting.

        Raises:
            RunLockedError: another process (or another RunLock) holds it.
            OutputError: the run directory cannot be created or written.
        """
        import fcntl

        if self._fd is not None:
            return self
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileExistsError:
            raise OutputError(
                f"cannot use {self.run_dir}: it exists and is not a directory", path=self.run_dir
            ) from None
        except OSError as e:
            raise output_error(e, self.path, "lock") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                h = self._wait_for_holder_info()
                who = (f" (pid {h.get('pid')} on {h.get('host')}, since {h.get('since')})"
                       if h else "")
                raise RunLockedError(
                    f"{self.run_dir} is being written by another veil process{who}; wait for it "
                    "to finish, or use another run name",
                    path=self.run_dir,
                ) from None
            raise output_error(e, self.path, "lock") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
        try:
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps(info).encode())
        except OSError as e:
            os.close(fd)
            raise output_error(e, self.path, "lock") from None
        self._fd = fd
        return self

    def forget_since(self) -> None:
        """Rewrite the held lock's info without its start time (``veil tune``: when a search
        began, beside when it released, would tell how many trials it ran)."""
        if self._fd is None:
            return
        info = {"pid": os.getpid(), "host": socket.gethostname()}
        try:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
            os.write(self._fd, json.dumps(info).encode())
        except OSError as e:
            raise output_error(e, self.path, "lock") from None

    def release(self) -> None:
        """Drop the lock (the lock file stays; it is not a lock by itself existing)."""
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.release()
