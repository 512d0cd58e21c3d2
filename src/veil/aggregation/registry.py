"""Every stage and summation protocol by name: a new mechanism is one file plus one line here."""

from __future__ import annotations

from typing import Any

from veil.aggregation.ckks_sum import CkksSum
from veil.aggregation.distributed_dp import DistributedDP
from veil.aggregation.aggregate_check import AggregateCheck
from veil.aggregation.anomaly import ScreenedSum
from veil.aggregation.dp_fedavg import AdaptiveDPFedAvg, DPFedAvg
from veil.aggregation.payload import PayloadSum
from veil.aggregation.plain import Clip, PlainSum, UniformMean, WeightedMean
from veil.aggregation.qsgd import QSGD
from veil.aggregation.quantize import Quantize
from veil.aggregation.robust import RobustSum
from veil.aggregation.randk import RandK
from veil.aggregation.secagg import SecAggSum
from veil.aggregation.topk import TopK
from veil.errors import ConfigError

__all__ = ["STAGES", "SUMMATIONS", "make_stage", "make_summation"]

STAGES: dict[str, type[Any]] = {
    "clip": Clip,
    "weighted_mean": WeightedMean,
    "uniform_mean": UniformMean,
    "dp_fedavg": DPFedAvg,
    "adaptive_dp_fedavg": AdaptiveDPFedAvg,
    "quantize": Quantize,
    "distributed_dp": DistributedDP,
    "aggregate_check": AggregateCheck,
    "topk": TopK,
    "randk": RandK,
    "qsgd": QSGD,
}

SUMMATIONS: dict[str, type[Any]] = {
    "plain_sum": PlainSum,
    "secagg": SecAggSum,
    "ckks": CkksSum,
    "robust": RobustSum,
    "anomaly": ScreenedSum,
    "payload_sum": PayloadSum,
}


def _make(table: dict[str, type[Any]], what: str, name: str, params: dict[str, Any]) -> Any:
    if name not in table:
        raise ConfigError(f"unknown {what} {name!r}; choose one of {sorted(table)}", key=what)
    try:
        return table[name](**params)
    except TypeError as e:
        raise ConfigError(f"{what} {name!r}: {e}", key=what) from None


def make_stage(name: str, **params: Any) -> Any:
    """The stage registered as ``name`` with ``params``.

    Raises:
        ConfigError: unknown name or parameters.
    """
    return _make(STAGES, "stage", name, params)


def make_summation(name: str, **params: Any) -> Any:
    """The summation protocol registered as ``name`` with ``params``.

    Raises:
        ConfigError: unknown name or parameters.
    """
    return _make(SUMMATIONS, "summation", name, params)
