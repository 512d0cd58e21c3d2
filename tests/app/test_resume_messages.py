"""--resume on a corrupt checkpoint names the fix (--restart); a finished run resumes to itself."""

from __future__ import annotations

import pytest

from veil.app import train
from veil.errors import ConfigError
from veil.federation.config import parse_config


def test_corrupt_checkpoint_names_restart(tmp_path) -> None:
    cfg = parse_config({"name": "r", "rounds": 1, "output_dir": str(tmp_path),
                        "model": {"name": "logreg"}, "data": {"sites": 3}})
    train(cfg)
    (tmp_path / "r" / "checkpoint.pt").write_bytes(b"garbage")
    with pytest.raises(ConfigError, match=r"unreadable.*veil train --restart CONFIG.*previous-N"):
        train(cfg, resume=True)
    with pytest.raises(ConfigError, match="already holds a run.*--restart"):
        train(cfg)
