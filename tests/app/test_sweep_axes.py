"""The sweep figure's axes say what they show, with ticks at the swept ε values."""

from __future__ import annotations

import math

import matplotlib.figure

from veil.privacy.sweep import write_sweep


def test_sweep_axes_are_labelled_with_plain_epsilon_ticks(tmp_path, monkeypatch) -> None:
    seen = []
    real = matplotlib.figure.Figure.savefig

    def capture(self, *a, **k):  # the figure as written, before it is closed
        ax = self.axes[0]
        seen.append((ax.get_xlabel(), ax.get_ylabel(),
                     [t.get_text() for t in ax.get_xticklabels()]))
        return real(self, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", capture)
    rows = [{"epsilon": e, "accuracy": a} for e, a in
            [(0.5, 0.6), (1.0, 0.7), (2.0, 0.8), (8.0, 0.9), (math.inf, 0.95)]]
    write_sweep(rows, tmp_path)
    xlabel, ylabel, ticks = seen[0]
    assert xlabel.startswith("target ε (log scale") and "accuracy" in ylabel
    assert ticks == ["0.5", "1", "2", "8"]
    assert (tmp_path / "sweep.png").is_file()
