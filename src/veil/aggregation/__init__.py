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
from veil.aggregation.plain import Clip, PlainSum, UniformMean, WeightedMean, l2_clip

__all__ = [
    "Clip",
    "DecodeContext",
    "EncodeContext",
    "Pipeline",
    "PipelineState",
    "PlainSum",
    "RoundResult",
    "SumProtocol",
    "SumResult",
    "Transform",
    "UniformMean",
    "WeightedMean",
    "check_updates",
    "l2_clip",
]
