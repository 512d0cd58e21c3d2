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
from veil.aggregation.aggregate_check import AggregateCheck
from veil.aggregation.anomaly import ScreenedSum
from veil.aggregation.defences import Defences, defended_pipeline
from veil.aggregation.dp_fedavg import AdaptiveDPFedAvg, DPFedAvg
from veil.aggregation.payload import PayloadSum
from veil.aggregation.plain import Clip, PlainSum, UniformMean, WeightedMean, l2_clip
from veil.aggregation.qsgd import QSGD
from veil.aggregation.quantize import Quantize
from veil.aggregation.randk import RandK
from veil.aggregation.robust import RobustSum
from veil.aggregation.registry import STAGES, SUMMATIONS, make_stage, make_summation
from veil.aggregation.secagg import SecAggSum
from veil.aggregation.topk import TopK

__all__ = [
    "CIPHERTEXT",
    "FLOAT",
    "STAGES",
    "SUMMATIONS",
    "AdaptiveDPFedAvg",
    "AggregateCheck",
    "Chain",
    "Clip",
    "DPFedAvg",
    "DecodeContext",
    "Defences",
    "DistributedDP",
    "Domain",
    "EncodeContext",
    "Misfit",
    "PayloadSum",
    "Pipeline",
    "PipelineState",
    "PlainSum",
    "QSGD",
    "Quantize",
    "RandK",
    "RobustSum",
    "RoundResult",
    "ScreenedSum",
    "SecAggSum",
    "SumProtocol",
    "SumResult",
    "TopK",
    "Transform",
    "UniformMean",
    "WeightedMean",
    "check_updates",
    "defended_pipeline",
    "l2_clip",
    "make_stage",
    "make_summation",
    "presets",
    "ring",
]
