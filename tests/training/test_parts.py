"""A site's row index outside the data is a typed error naming the site, not an IndexError."""

from __future__ import annotations

import numpy as np
import pytest

from veil.errors import DataError
from veil.federation.build import build_federation
from veil.federation.config import parse_config
from veil.training import SiteData


def test_index_outside_the_data_names_site_and_index() -> None:
    x, y = np.zeros((10, 3), np.float32), np.zeros(10, np.int64)
    with pytest.raises(DataError, match=r"site 1: row index 12 is outside the data \(10"):
        SiteData(x, y, [np.arange(5), np.array([5, 12])])
    with pytest.raises(DataError, match="site 0: row index -1"):
        SiteData(x, y, [np.array([-1])])
    with pytest.raises(DataError, match="must be integers"):
        SiteData(x, y, [np.array([0.5])])
    cfg = parse_config({"data": {"sites": 2}, "model": {"name": "logreg"}})
    with pytest.raises(DataError, match="site 0: row index 5000 is outside the data"):
        build_federation(cfg, parts=[np.array([0, 1, 5000]), np.array([2, 3])])
