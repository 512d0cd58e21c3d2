"""Whole runs, assembled above the federation: train, tune, sweep, audit after a run.

Example:
    >>> from veil.app import RunConfig, train
    >>> out = train(RunConfig(name="quick", rounds=3))  # doctest: +SKIP
"""

from veil.app.sweep import privacy_sweep
from veil.app.train import TrainOutput, threat_model, train
from veil.app.tune import TuneOutput, tune_run
from veil.federation.config import RunConfig, load_config, parse_config

__all__ = ["RunConfig", "TrainOutput", "TuneOutput", "load_config", "parse_config",
           "privacy_sweep", "threat_model", "train", "tune_run"]
