"""`veil infer --backend mpc` and `veil mpc certs` through the real argument parser."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_diabetes
from sklearn.linear_model import Ridge

from veil.cli.main import main
from veil.models.ir import from_sklearn, save


def test_infer_mpc_on_a_model_file_writes_outputs(tmp_path, capsys) -> None:
    x, y = load_diabetes(return_X_y=True)
    est = Ridge().fit(x, y)
    save(from_sklearn(est), tmp_path / "m.npz")
    np.save(tmp_path / "x.npy", x[:7])
    rc = main(["infer", "--backend", "mpc", str(tmp_path / "m.npz"), str(tmp_path / "x.npy"),
               "--parties", "inprocess", "--out", str(tmp_path / "y.npy")])
    assert rc == 0
    got = np.load(tmp_path / "y.npy")[:, 0]
    np.testing.assert_allclose(got, est.predict(x[:7]), rtol=1e-3)
    out = capsys.readouterr().out
    assert "online" in out and "rounds 2" in out


def test_unknown_backend_and_missing_input_are_one_line_errors(tmp_path, capsys) -> None:
    x, y = load_diabetes(return_X_y=True)
    save(from_sklearn(Ridge().fit(x, y)), tmp_path / "m.npz")
    assert main(["infer", "--backend", "quantum", str(tmp_path / "m.npz")]) == 2
    assert main(["infer", str(tmp_path / "m.npz")]) == 2
    err = capsys.readouterr().err
    assert "unknown backend" in err and "INPUT" in err


def test_mpc_certs_names_each_party(tmp_path) -> None:
    from veil.crypto.certs import load_certificate, party_name

    assert main(["mpc", "certs", "--out", str(tmp_path)]) == 0
    for name in ("p0", "p1", "p2", "client"):
        assert party_name(load_certificate(tmp_path / f"{name}.crt")) == name
