"""Composable aggregation: stages (clip, weight, noise, quantise) as values, chains of them,
presets that return chains, around a summation protocol (plain sum, SecAgg+). See
:mod:`veil.aggregation.base` for the interface and :mod:`veil.aggregation.registry` for
the stages by name."""

from veil.aggregation import presets
from veil.aggregation.base import (
    CIPHERTEXT,
    FLOAT,
    Chain,
    DecodeContext,
    Domain,
    EncodeContext,
    Misfit,
    Pipeline,
    PipelineState,
    RoundResult,
    SumProtocol,
    SumResult,
    Transform,
    check_updates,
    ring,
)
from veil.aggregation.distributed_dp import DistributedDP
from veil.aggregation.dp_fedavg import AdaptiveDPFedAvg, DPFedAvg
from veil.aggregation.plain import Clip, PlainSum, UniformMean, WeightedMean, l2_clip
from veil.aggregation.quantize import Quantize
from veil.aggregation.registry import STAGES, SUMMATIONS, make_stage, make_summation
from veil.aggregation.secagg import SecAggSum

__all__ = [
    "CIPHERTEXT",
    "FLOAT",
    "STAGES",
    "SUMMATIONS",
    "AdaptiveDPFedAvg",
    "Chain",
    "Clip",
    "DPFedAvg",
    "DecodeContext",
    "DistributedDP",
    "Domain",
    "EncodeContext",
    "Misfit",
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
    "make_stage",
    "make_summation",
    "presets",
    "ring",
]
