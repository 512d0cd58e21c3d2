"""`veil recommend` and `veil infer --backend fhe` through the CLI entry point."""

from __future__ import annotations

from veil.cli.main import main


def test_recommend_prints_both_backends_and_a_choice(tmp_path, capsys) -> None:
    out_json = tmp_path / "rec.json"
    rc = main(["recommend", "diabetes-linreg", "--cache", str(tmp_path / "c"),
               "--rtt-ms", "0.6", "--json", str(out_json)])
    text = capsys.readouterr().out
    assert rc == 0 and "mpc" in text and "fhe" in text and "choice:" in text
    assert out_json.exists()
    rc = main(["recommend", "diabetes-rf", "--cache", str(tmp_path / "c"), "--threat",
               "one-server"])
    text = capsys.readouterr().out
    assert rc == 3 and "choice: none" in text  # forests need mpc, which one-server rules out


def test_infer_fhe_backend(capsys) -> None:
    rc = main(["infer", "diabetes-linreg", "--backend", "fhe", "--batch", "2"])
    text = capsys.readouterr().out
    assert rc == 0 and "backend fhe" in text and "rounds 1" in text
