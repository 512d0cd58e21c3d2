"""Both FHE roles in one process, phases timed and bytes counted (API, CLI, benchmark)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from veil.models.ir import Model
from veil.securecompute.fhe.compile import Compiled, compile_model
from veil.securecompute.fhe.roles import FheClient, FheServer

__all__ = ["FheResult", "run_inference", "FheSession"]


@dataclass
class FheResult:
    """One encrypted inference (a batch), timed by phase.

    Attributes:
        outputs: decrypted model outputs (n, out_features) (scores for classifiers).
        setup_s: compile + client key generation + key transfer and load + one warm-up
            evaluation (plaintext diagonals encoded at their levels).
        encrypt_s / server_s / decrypt_s: medians over ``repeats``.
        latency_s: encrypt + server + decrypt (median of the sums).
        bytes_keys / bytes_up / bytes_down: key message, encrypted inputs, encrypted outputs.
    """

    outputs: np.ndarray
    setup_s: float
    encrypt_s: float
    server_s: float
    decrypt_s: float
    latency_s: float
    bytes_keys: int
    bytes_up: int
    bytes_down: int
    report: dict[str, Any] = field(default_factory=dict)


class FheSession:
    """A client and a server that have exchanged keys (set-up done once)."""

    def __init__(self, compiled: Compiled, warm_input: np.ndarray | None = None) -> None:
        t0 = time.perf_counter()
        self.compiled = compiled
        self.client = FheClient(compiled.plan)
        self.server = FheServer(compiled)
        keys = self.client.keys_message()
        self.bytes_keys = len(keys)
        self.server.receive_keys(keys)
        if warm_input is not None:
            self.server.evaluate(self.client.encrypt(warm_input))
        self.setup_s = time.perf_counter() - t0

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, dict[str, float | int]]:
        """Encrypt, evaluate, decrypt; times and bytes of this call."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.compiled.plan.in_features)
        t0 = time.perf_counter()
        up = self.client.encrypt(x)
        t1 = time.perf_counter()
        down = self.server.evaluate(up)
        t2 = time.perf_counter()
        out = self.client.decrypt(down, len(x))
        t3 = time.perf_counter()
        return out, {"encrypt_s": t1 - t0, "server_s": t2 - t1, "decrypt_s": t3 - t2,
                     "latency_s": t3 - t0, "bytes_up": len(up), "bytes_down": len(down)}


def run_inference(
    model: Model,
    x: np.ndarray,
    calibration: np.ndarray,
    *,
    degree: int | dict[str, int] | str = "auto",
    repeats: int = 1,
    compiled: Compiled | None = None,
) -> FheResult:
    """Compile ``model``, set up keys, and run ``x`` (one request of len(x) samples).

    Raises:
        UnsupportedModelError: the model has a layer the fhe backend cannot evaluate.
        ConfigError: no 128-bit parameters fit, or ``x`` has the wrong shape.
    """
    t0 = time.perf_counter()
    x = np.asarray(x, dtype=np.float64).reshape((-1,) + model.input_shape)
    comp = compiled or compile_model(model, calibration, degree=degree, batch=len(x))
    flat = x.reshape(len(x), -1)
    sess = FheSession(comp, warm_input=flat)
    setup = time.perf_counter() - t0
    runs = [sess.infer(flat) for _ in range(max(1, repeats))]
    med = {k: float(np.median([r[1][k] for r in runs])) for k in runs[0][1]}
    return FheResult(
        outputs=runs[-1][0],
        setup_s=setup,
        encrypt_s=med["encrypt_s"],
        server_s=med["server_s"],
        decrypt_s=med["decrypt_s"],
        latency_s=med["latency_s"],
        bytes_keys=sess.bytes_keys,
        bytes_up=int(med["bytes_up"]),
        bytes_down=int(med["bytes_down"]),
        report=comp.report,
    )


def infer_cli(model: Model, x: np.ndarray, args: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """The ``fhe`` backend of ``veil infer``: outputs and a cost summary.

    Activation ranges are calibrated on the named model's training inputs; for a model file
    or run directory (no training data at hand) on the inputs themselves — acceptable only
    because in this one-process command the user plays both roles (the summary says so).
    """
    from veil.securecompute.recommend_models import NAMED_MODELS

    name = getattr(args, "model", "")
    calib, note = x, "activation ranges calibrated on the inputs (single-user command)"
    if name in NAMED_MODELS:
        calib, note = NAMED_MODELS[name]().calibration, "calibrated on the training inputs"
    r = run_inference(model, x, calib)
    return r.outputs, {
        "setup_s": r.setup_s, "input_s": r.encrypt_s, "online_s": r.server_s,
        "reveal_s": r.decrypt_s, "encrypt_s": r.encrypt_s, "server_s": r.server_s,
        "decrypt_s": r.decrypt_s, "latency_s": r.latency_s, "rounds": 1,
        "bytes": r.bytes_up + r.bytes_down, "key_bytes": r.bytes_keys,
        "ring": r.report.get("poly_degree_n"), "depth": r.report.get("depth"), "note": note,
    }
