"""Site identities and rosters: signatures verify only with the enrolled key, altered or
unpinned rosters and copied keys are refused, private keys never shown or overwritten."""

from __future__ import annotations

import os
import pickle

import pytest

from veil.crypto.identity import Roster, SiteIdentity, verify
from veil.errors import ConfigError, IntegrityError


def test_sign_verify_and_files(tmp_path) -> None:
    me = SiteIdentity.generate(7)
    sig = me.sign(b"msg")
    verify(me.public, b"msg", sig)
    with pytest.raises(IntegrityError):
        verify(me.public, b"msG", sig)
    with pytest.raises(IntegrityError):
        verify(SiteIdentity.generate(8).public, b"msg", sig)
    key, pub = me.save(tmp_path)
    assert os.stat(key).st_mode & 0o077 == 0
    with pytest.raises(ConfigError, match="never overwritten"):
        me.save(tmp_path)
    back = SiteIdentity.load(7, key)
    assert back.public == me.public
    verify(me.public, b"x", back.sign(b"x"))
    assert "PRIVATE" not in repr(back)
    with pytest.raises(TypeError):
        pickle.dumps(back)


def test_roster_round_trip_pin_and_tamper(tmp_path) -> None:
    ids = [SiteIdentity.generate(i) for i in range(4)]
    for i in ids:
        i.save(tmp_path)
    roster = Roster.from_public_files("fed", sorted(tmp_path.glob("*.pub")))
    assert roster == Roster.of("fed", ids)
    text = roster.to_json()
    assert Roster.from_json(text, pinned_digest=roster.digest().hex()) == roster
    with pytest.raises(IntegrityError, match="pinned"):
        Roster.from_json(text, pinned_digest="00" * 32)
    evil = SiteIdentity.generate(2)
    altered = text.replace(ids[2].public.hex(), evil.public.hex())
    with pytest.raises(IntegrityError, match="altered"):
        Roster.from_json(altered)
    with pytest.raises(IntegrityError, match="not in the roster"):
        roster.key_of(99)
    with pytest.raises(ConfigError, match="copied"):
        Roster("fed", {1: ids[0].public, 2: ids[0].public})
    with pytest.raises(ConfigError):
        Roster("fed", {1: b"\x00" * 31})


def test_cli_new_roster_verify(tmp_path, capsys) -> None:
    from veil.cli.main import main

    for s in (1, 2, 3):
        assert main(["identity", "new", "--site", str(s), "--out", str(tmp_path / "k")]) == 0
    assert main(["identity", "new", "--site", "1", "--out", str(tmp_path / "k")]) == 2
    pubs = [str(p) for p in sorted((tmp_path / "k").glob("*.pub"))]
    roster = tmp_path / "roster.json"
    assert main(["identity", "roster", "--federation", "f", "--out", str(roster), *pubs]) == 0
    digest = Roster.from_json(roster.read_text()).digest().hex()
    capsys.readouterr()
    assert main(["identity", "verify", str(roster), "--digest", digest]) == 0
    assert "3 sites (1, 2, 3)" in capsys.readouterr().out
    assert main(["identity", "verify", str(roster), "--digest", "ab" * 32]) == 2
    assert "not the pinned one" in capsys.readouterr().err
