"""Composable aggregation: transforms (clip, weight, noise, quantise) around a summation
protocol (plain sum, SecAgg+). See :mod:`veil.aggregation.base` for the interface."""

from veil.aggregation.base import (
    DecodeContext,
    EncodeContext,
    Pipeline,
    PipelineState,
    RoundResult,
    SumProtocol,
    SumResult,
    Transform,
    check_updates,
)
from veil.aggregation.distributed_dp import DistributedDP
from veil.aggregation.plain import Clip, PlainSum, UniformMean, WeightedMean, l2_clip
from veil.aggregation.quantize import Quantize
from veil.aggregation.secagg import SecAggSum

__all__ = [
    "Clip",
    "DecodeContext",
    "DistributedDP",
    "EncodeContext",
    "Pipeline",
    "PipelineState",
    "PlainSum",
    "Quantize",
    "RoundResult",
    "SecAggSum",
    "SumProtocol",
    "SumResult",
    "Transform",
    "UniformMean",
    "WeightedMean",
    "check_updates",
    "l2_clip",
]
