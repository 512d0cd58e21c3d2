"""A fractional fixed-size cohort is charged at the rate of the sites the server draws."""

from __future__ import annotations

import numpy as np
import pytest
from dp_accounting import dp_event as dpe

from veil.crypto.prg import SecureRng
from veil.federation.server import round_half
from veil.privacy.neighbouring import cohort_event, cohort_rate, fixed_cohort_size
from veil.privacy.release import draw_cohort


@pytest.mark.parametrize("cohort", [0.4, 1.5, 2.5, 3.5, 4.49, 4.5, 7.0])
def test_charged_rate_matches_the_drawn_cohort(cohort: float) -> None:
    n = 10
    drawn = len(draw_cohort(SecureRng.from_seed(0, "t"), n, cohort, "fixed"))
    # the server's denominator, the draw and the accounting agree (half rounds up)
    assert drawn == round_half(cohort) == fixed_cohort_size(cohort)
    assert cohort_rate("fixed", cohort, n) == pytest.approx(drawn / n)
    ev = cohort_event(dpe.GaussianDpEvent(1.0), "fixed", cohort, n)
    assert ev.sampling_probability == pytest.approx(drawn / n)  # type: ignore[attr-defined]


def test_half_cohort_is_not_undercharged() -> None:
    # banker's rounding would charge 2.5 of 10 at q = 0.2 while 3 sites take part
    assert fixed_cohort_size(2.5) == 3
    assert cohort_rate("fixed", 2.5, 10) == pytest.approx(0.3)
    assert cohort_rate("poisson", 2.5, 10) == pytest.approx(0.25)
    assert np.isclose(cohort_rate("fixed", 25, 10), 1.0)
