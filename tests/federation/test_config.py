from __future__ import annotations

import pytest

from veil.errors import ConfigError
from veil.federation import describe_keys, load_config, parse_config


def test_defaults_are_valid() -> None:
    cfg = parse_config({})
    assert cfg.data.sites == 5 and cfg.cohort == 5.0


@pytest.mark.parametrize(
    ("raw", "key", "fix"),
    [
        ({"rounds": 0}, "rounds", "greater than or equal to 1"),
        ({"data": {"sites": 0}}, "data.sites", "greater than or equal to 1"),
        ({"data": {"sites": "five"}}, "data.sites", "valid integer"),
        ({"data": {"partition": "random"}}, "data.partition", "'iid', 'dirichlet' or 'quantity'"),
        ({"federation": {"cohort_size": 9}}, "config", "larger than data.sites"),
        ({"federation": {"dropout_rate": 1.0}}, "federation.dropout_rate", "less than 1"),
        ({"federation": {"cohort_size": 2, "cohort_fraction": 0.5}}, "federation", "not both"),
        ({"lcoal": {"lr": 0.1}}, "lcoal", "unknown key"),
        ({"local": {"learning_rate": 0.1}}, "local.learning_rate", "unknown key"),
        ({"model": {"name": "cnn"}}, "config", "data.image = true"),
        ({"data": {"dataset": "csv"}}, "data", "needs data.path and data.label"),
        ({"name": "../escape"}, "config", "path separators"),
        ({"local": {"lr": -1}}, "local.lr", "greater than 0"),
    ],
)
def test_bad_configs_name_the_key(raw: dict, key: str, fix: str) -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config(raw)
    msg = str(ei.value)
    assert fix in msg
    if key != "config":
        assert key in msg


def test_several_errors_reported_together() -> None:
    with pytest.raises(ConfigError) as ei:
        parse_config({"rounds": -1, "data": {"sites": 0}})
    assert "rounds" in str(ei.value) and "data.sites" in str(ei.value)


def test_toml_file_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("rounds = [unclosed\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00rounds")
    with pytest.raises(ConfigError):
        load_config(binary)
    ok = tmp_path / "ok.toml"
    ok.write_text('name = "x"\nrounds = 4\n[data]\nsites = 3\n')
    cfg = load_config(ok, {"rounds": 2, "federation.cohort_size": 2})
    assert cfg.rounds == 2 and cfg.federation.cohort_size == 2


def test_every_key_is_described() -> None:
    keys = describe_keys()
    assert len(keys) > 30
    undocumented = [k for k, _default, d in keys if not d]
    assert not undocumented


def test_examples_validate() -> None:
    from pathlib import Path

    files = sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("*.toml"))
    assert files
    for f in files:
        load_config(f)


def test_secure_aggregation_refuses_a_cohort_under_three() -> None:
    import pytest

    from veil.errors import ConfigError
    from veil.federation.config import parse_config

    raw = {"data": {"sites": 5}, "federation": {"cohort_size": 2},
           "aggregation": {"secure_aggregation": True}}
    with pytest.raises(ConfigError, match="at least 3 sites.*subtract its own update"):
        parse_config(raw)
    with pytest.raises(ConfigError, match="at least 3 sites"):
        parse_config({"data": {"sites": 2}, "aggregation": {"secure_aggregation": True}})
    raw["federation"]["cohort_size"] = 3
    assert parse_config(raw).cohort == 3.0
    raw["aggregation"]["secure_aggregation"] = False
    raw["federation"]["cohort_size"] = 2
    assert parse_config(raw).cohort == 2.0  # without SecAgg the server sees updates anyway


def test_summation_key_and_its_old_boolean_name() -> None:
    import pytest

    from veil.errors import ConfigError
    from veil.federation.config import parse_config

    assert parse_config({"aggregation": {"secure_aggregation": True}}).aggregation.summation == (
        "secagg"
    )
    assert parse_config({"aggregation": {"secure_aggregation": False}}).aggregation.summation == (
        "plain"
    )
    assert parse_config({"aggregation": {"summation": "secagg"}}).aggregation.secure
    with pytest.raises(ConfigError, match="summation only"):
        parse_config({"aggregation": {"secure_aggregation": True, "summation": "plain"}})
    with pytest.raises(ConfigError):
        parse_config({"aggregation": {"summation": "paillier"}})


def test_server_refuses_a_secure_cohort_under_three() -> None:
    import pytest
    import torch

    from veil.aggregation import Pipeline, PlainSum, Quantize, SecAggSum, UniformMean
    from veil.errors import ConfigError
    from veil.federation import make_server_optimizer
    from veil.federation.server import Server

    opt = make_server_optimizer("fedavg", 1.0)
    secure = Pipeline([UniformMean(), Quantize(clip=0.5, bits=32)], SecAggSum(bits=32))
    with pytest.raises(ConfigError, match="at least 3 sites"):
        Server(secure, opt, torch.zeros(4), n_sites=5, cohort=2)
    Server(secure, opt, torch.zeros(4), n_sites=5, cohort=3)
    Server(Pipeline([UniformMean()], PlainSum()), opt, torch.zeros(4), n_sites=5, cohort=2)


def test_absurd_learning_rate_is_a_config_error() -> None:
    import pytest

    from veil.errors import ConfigError
    from veil.federation.config import parse_config

    # 1e39 overflows float32 inside the trainer (a raw RuntimeError before this check)
    with pytest.raises(ConfigError, match="local.lr"):
        parse_config({"local": {"lr": 1e39}})
