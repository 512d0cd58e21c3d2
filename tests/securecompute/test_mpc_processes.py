"""Three party processes over mutual TLS: a real inference, then a killed / stalled party."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from veil.errors import AbortError
from veil.models.ir import from_sklearn, predict
from veil.securecompute.mpc import MpcConfig
from veil.securecompute.mpc.processes import ProcessSession


def _model():
    x, y = load_digits(return_X_y=True)
    x = x / 16.0
    with threadpool_limits(1):
        lr = LogisticRegression(max_iter=200).fit(x[:1000], y[:1000])
    return from_sklearn(lr), x[1000:]


def test_three_processes_classify_then_a_killed_party_aborts_in_bounded_time() -> None:
    model, x = _model()
    with ProcessSession(model, MpcConfig(deadline_s=5.0)) as s:
        res = s.infer(x[:50])
        assert np.mean(np.argmax(res.output, 1) == predict(model, x[:50])) >= 0.98
        assert res.phases.bytes > 0 and res.phases.rounds == 2
        os.kill(s.procs["p1"].pid, signal.SIGKILL)
        s.procs["p1"].wait(10)
        t0 = time.monotonic()
        with pytest.raises(AbortError) as err:
            s.infer(x[:5])
        assert time.monotonic() - t0 < 15.0
        assert "p1" in str(err.value)
    for p in s.procs.values():  # every survivor exited (none left hanging)
        assert p.poll() is not None


@pytest.mark.slow
def test_a_stalled_party_makes_the_others_abort_after_the_deadline() -> None:
    model, x = _model()
    with ProcessSession(model, MpcConfig(deadline_s=3.0)) as s:
        s.infer(x[:2])
        os.kill(s.procs["p2"].pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(AbortError):
                s.infer(x[:2])
            assert time.monotonic() - t0 < 3.0 * 10 + 5
        finally:
            os.kill(s.procs["p2"].pid, signal.SIGCONT)
    for name in ("p0", "p1"):
        assert s.procs[name].poll() is not None
