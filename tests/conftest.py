"""Shared test settings: one torch thread (2-core CI), fixed seeds."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _torch_threads() -> None:
    torch.set_num_threads(1)
