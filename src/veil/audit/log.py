"""A hash-chained, append-only audit log of runs (JSON lines).

Each entry records ``index``, ``time``, ``kind``, ``payload``, the hash of the previous
entry (``prev``) and its own ``hash`` = SHA-256 over the canonical JSON of all other
fields. Editing any entry breaks its own hash; removing or reordering one breaks the chain
of the next. Truncation (dropping the newest entries) leaves a valid chain, so the log also
keeps a *head file* next to it (``<log>.head``) holding the entry count and the newest hash;
:meth:`AuditLog.verify` checks both. An attacker who can rewrite both files consistently is
outside this threat model: keep a copy of the head hash elsewhere (print it, put it in the
report, commit it) to detect that too.

A log file that does not exist does not verify (``veil log verify`` on a wrong path fails);
appending to a path where neither the log nor its head file exists starts a new log.
:func:`verify_before_run` checks the log before a run starts, so a broken log stops the
run before any work is done; :meth:`AuditLog.append_run` appends a finished run once
(resuming a finished run does not add a second entry).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from veil._env import versions
from veil.errors import DataError, LocalError

__all__ = [
    "AuditLog",
    "VerifyResult",
    "GENESIS",
    "environment_versions",
    "run_entry",
    "run_key",
    "verify_before_run",
]

#: ``prev`` of the first entry.
GENESIS = "0" * 64


def environment_versions() -> dict[str, str]:
    """Python and dependency versions (``"missing"`` where a package is not installed)."""
    return versions()


def _canonical(obj: Any) -> bytes:
    try:
        return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    except (TypeError, ValueError) as e:
        raise LocalError(
            f"audit log payload is not plain JSON (no NaN/inf, str keys): {e}"
        ) from None


def _entry_hash(entry: dict[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(_canonical(body)).hexdigest()


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`.

    Attributes:
        ok: every entry is intact and the chain matches the head file.
        n_entries: number of entries read.
        head: hash of the newest entry (``GENESIS`` for an empty log).
        bad_index: 0-based line index of the first bad entry (``n_entries`` when entries
            are missing at the end), or ``None`` when ``ok``.
        reason: what was wrong, or ``""``.
    """

    ok: bool
    n_entries: int
    head: str
    bad_index: int | None = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


class AuditLog:
    """An append-only hash-chained log stored as JSON lines at ``path``.

    Args:
        path: the log file (created on first append); the head file is ``path + ".head"``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.head_path = self.path.with_name(self.path.name + ".head")

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def entries(self) -> list[dict[str, Any]]:
        """All entries, oldest first (not verified; call :meth:`verify` for that).

        Raises:
            DataError: a line is not valid JSON.
        """
        if not self.path.exists():
            return []
        out = []
        with open(self.path, encoding="utf-8") as f:
            for n, line in enumerate(f):
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    raise DataError(f"{self.path}: entry {n} is not valid JSON") from None
        return out

    def _read_head(self) -> dict[str, Any] | None:
        if not self.head_path.exists():
            return None
        try:
            return json.loads(self.head_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return {}

    def append(self, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Append one entry after checking the existing chain.

        Args:
            kind: entry type, e.g. ``"run"``, ``"round"``, ``"audit"``.
            payload: plain JSON data (config, versions, ε per round, bytes per round, ...).

        Returns:
            The stored entry (with its ``hash``).

        Raises:
            DataError: the existing log fails verification (appending to a broken chain
                would hide the break).
            LocalError: the payload is not plain JSON.
        """
        if not isinstance(kind, str) or not kind:
            raise LocalError("audit log entry kind must be a non-empty string")
        check = self.verify(missing_ok=True)
        if not check.ok:
            raise DataError(
                f"{self.path} fails verification at entry {check.bad_index} ({check.reason}); "
                "refusing to append. Inspect it with `veil log verify`."
            )
        entry: dict[str, Any] = {
            "index": check.n_entries,
            "time": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "kind": kind,
            "payload": payload,
            "prev": check.head,
        }
        _canonical(entry)  # validate before touching the file
        entry["hash"] = _entry_hash(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        tmp = self.head_path.with_name(self.head_path.name + ".tmp")
        tmp.write_text(json.dumps({"count": entry["index"] + 1, "head": entry["hash"]}))
        os.replace(tmp, self.head_path)
        return entry

    def append_run(self, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Append a finished run's entry (:func:`run_entry`) unless the log already has it.

        A run is identified by :func:`run_key` (name, config, seeds and per-round results),
        so resuming a finished run adds nothing, while continuing it for more rounds adds
        a new entry.

        Returns:
            ``(entry, appended)``: the stored entry and whether it was new.

        Raises:
            DataError, LocalError: as :meth:`append`.
        """
        payload = run_entry(record)
        key = run_key(payload)
        check = self.verify(missing_ok=True)
        if check.ok:
            for e in self.entries():
                p = e.get("payload")
                if e.get("kind") == "run" and isinstance(p, dict) and (
                    p.get("run_key") == key or ("run_key" not in p and run_key(p) == key)
                ):
                    return e, False
        return self.append("run", {**payload, "run_key": key}), True

    def verify(self, missing_ok: bool = False) -> VerifyResult:
        """Check every entry's hash, the chain links, indices and the head file.

        Args:
            missing_ok: treat a path where neither the log nor its head file exists as an
                empty, intact log (what :meth:`append` does). By default a missing log
                fails: verifying a log that is not there proves nothing.

        Returns:
            A :class:`VerifyResult`; ``bad_index`` is the first entry that fails.
        """
        if not self.path.exists():
            if self.head_path.exists():
                said = (self._read_head() or {}).get("count", "?")
                return VerifyResult(False, 0, GENESIS, 0,
                                    f"log file {self.path} is missing but its head file says "
                                    f"{said} entries (log deleted?)")
            if not missing_ok:
                return VerifyResult(False, 0, GENESIS, None, f"no audit log at {self.path}")
            return VerifyResult(True, 0, GENESIS)
        if not self.path.is_file():
            return VerifyResult(False, 0, GENESIS, None, f"{self.path} is not a file")
        try:
            entries = self.entries()
        except DataError as e:
            return VerifyResult(False, 0, GENESIS, 0, str(e))
        prev = GENESIS
        for i, rec in enumerate(entries):
            if not isinstance(rec, dict) or "hash" not in rec:
                return VerifyResult(False, i, prev, i, "entry is not a log record")
            if rec.get("index") != i:
                return VerifyResult(False, i, prev, i, f"index {rec.get('index')} != position {i}")
            if rec.get("prev") != prev:
                return VerifyResult(False, i, prev, i, "chain broken: prev hash does not match")
            try:
                h = _entry_hash(rec)
            except LocalError:
                return VerifyResult(False, i, prev, i, "entry is not canonical JSON")
            if h != rec["hash"]:
                return VerifyResult(False, i, prev, i, "entry hash mismatch (entry edited)")
            prev = rec["hash"]
        n = len(entries)
        head = self._read_head()
        if head is None:
            if n:
                return VerifyResult(False, n, prev, n, "head file missing")
            return VerifyResult(True, 0, GENESIS)
        count, hh = head.get("count"), head.get("head")
        if count != n or hh != prev:
            if isinstance(count, int) and count > n:
                return VerifyResult(
                    False, n, prev, n, f"log truncated: head file says {count} entries, found {n}"
                )
            return VerifyResult(False, n, prev, min(n, count if isinstance(count, int) else n),
                                "head file does not match the newest entry")
        return VerifyResult(True, n, prev)


def verify_before_run(path: str | os.PathLike[str]) -> VerifyResult:
    """Check the audit log a run will append to, before the run starts.

    A log that does not exist yet is fine (the run starts it); a broken one stops the run
    now rather than after training, when the entry could not be appended.

    Raises:
        DataError: the log (or its head file) fails verification; the message says where
            and how to inspect it.
    """
    log = AuditLog(path)
    res = log.verify(missing_ok=True)
    if not res.ok:
        raise DataError(
            f"the audit log {log.path} fails verification at entry {res.bad_index} "
            f"({res.reason}); the run would not be logged. Inspect it with `veil log verify "
            f"{log.path}`, restore it from a copy, or set audit.log = false"
        )
    return res


def run_key(payload: dict[str, Any]) -> str:
    """Identity of a run entry: SHA-256 over its name, config, seeds and per-round results
    (not wall-clock times), so the same finished run always gives the same key."""
    body = {k: payload.get(k) for k in ("name", "config", "seeds", "rounds")}
    return hashlib.sha256(_canonical(body)).hexdigest()


def run_entry(record: dict[str, Any]) -> dict[str, Any]:
    """The audit-log payload for a finished run, taken from its ``record.json`` dict.

    Keeps what an auditor needs to re-check a run: config, veil and dependency versions,
    seeds, protocol parameters (pipeline, plan, privacy summary), ε spent and bytes sent
    per round, and the final metrics. Missing keys are simply left out.
    """
    rounds = []
    for r in record.get("rounds", []) or []:
        row: dict[str, Any] = {"round": r.get("round")}
        for k in ("epsilon_client", "epsilon_sample_max", "test_accuracy", "bytes_per_site_mean"):
            if r.get(k) is not None:
                row[k] = r[k]
        if r.get("bytes_sent") is not None:
            row["bytes_total"] = int(sum(r["bytes_sent"].values()))
        rounds.append(row)
    out: dict[str, Any] = {
        "name": record.get("name"),
        "veil_version": record.get("veil_version"),
        "versions": record.get("versions") or environment_versions(),
        "config": record.get("config", {}),
        "seeds": record.get("seeds", {}),
        "pipeline": record.get("pipeline", []),
        "plan": record.get("plan", {}),
        "privacy": record.get("privacy", {}),
        "rounds": rounds,
        "final": record.get("final", {}),
    }
    if record.get("tuning"):  # an accounted search: K, candidates, the search's ε
        out["tuning"] = record["tuning"]
    from veil._fs import json_safe

    return dict(json_safe(out))  # NaN/inf (e.g. a diverged loss) become null
