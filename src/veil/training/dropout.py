"""Dropout in the vectorised trainer: per-site, seeded masks drawn outside ``vmap``.

Inside ``torch.func.vmap`` a Dropout layer would draw from torch's global generator, so a
site's mask would depend on which sites shared its round and on nothing recorded. Here
the trainer draws every mask itself, before the vectorised forward pass:

1. :meth:`DropoutPlan.shapes` runs one example through the model (no gradient) and
   records the per-example input shape of each Dropout layer.
2. :meth:`DropoutPlan.masks` draws, for every site and local step, each layer's keep mask
   ``Bernoulli(1 − p) / (1 − p)`` from a ``torch.Generator`` seeded with
   ``SeedSequence(seed, round, site id, step, layer)``: ML randomness, seeded by the run
   seed (recorded in the run), the same for a site whatever other sites train with it.
   ``nn.Dropout`` drops single activations; ``Dropout1d/2d/3d`` whole channels.
3. :meth:`DropoutPlan.applied` puts the Dropout layers in eval mode (identity) and adds a
   forward hook that multiplies their output by the site's mask, so the mask (a vmapped
   input) flows through ``functional_call`` and autograd like any other tensor.

At evaluation (``model.eval()``) dropout is off as usual. Dropout is not the
randomness DP relies on, so it comes from a seeded generator, not the CSPRNG.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from veil.errors import ConfigError

__all__ = ["DropoutPlan", "dropout_layers"]

_CHANNEL = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
_TAG = 0xD809


def dropout_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name, module) of every dropout layer with ``p > 0``, in module order.

    Raises:
        ConfigError: an AlphaDropout / FeatureAlphaDropout layer (not supported: it
            shifts activations as well as masking them).
    """
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0:
            if isinstance(mod, (nn.AlphaDropout, nn.FeatureAlphaDropout)):
                raise ConfigError(
                    f"layer {name or 'the model'} ({type(mod).__name__}) is not supported "
                    "by the vectorised federated trainer; use nn.Dropout",
                    key="model",
                )
            out.append((name, mod))
    return out


class DropoutPlan:
    """Per-site seeded dropout masks for one model (see the module docstring).

    Args:
        model: the architecture.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.layers = dropout_layers(model)
        self._shapes: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
        self._current: list[torch.Tensor] | None = None

    def __bool__(self) -> bool:
        return bool(self.layers)

    def describe(self) -> dict[str, Any]:
        """What a run record says about its dropout randomness."""
        return {
            "layers": {n or "model": float(m.p) for n, m in self.layers},
            "generator": "torch.Generator seeded with SeedSequence(seed, round, site, step, "
            "layer) from the run seed",
        }

    def shapes(self, example: torch.Tensor) -> list[tuple[int, ...]]:
        """Each dropout layer's mask shape for one example (``example`` has no batch dim)."""
        key = tuple(example.shape)
        if key in self._shapes:
            return self._shapes[key]
        seen: dict[int, tuple[int, ...]] = {}
        hooks = []
        for i, (_, mod) in enumerate(self.layers):
            def rec(m: nn.Module, inp: Any, out: torch.Tensor, i: int = i) -> None:
                seen.setdefault(i, tuple(out.shape[1:]))

            hooks.append(mod.register_forward_hook(rec))
        was = self.model.training
        try:
            self.model.eval()
            with torch.no_grad():
                self.model(example.unsqueeze(0).to(torch.float32))
        finally:
            self.model.train(was)
            for h in hooks:
                h.remove()
        shapes = []
        for i, (name, mod) in enumerate(self.layers):
            if i not in seen:
                raise ConfigError(f"dropout layer {name} is not used in the forward pass; "
                                  "remove it", key="model")
            s = seen[i]
            if isinstance(mod, _CHANNEL):  # one draw per channel, broadcast over the rest
                s = (s[0],) + (1,) * (len(s) - 1) if s else s
            shapes.append(s)
        self._shapes[key] = shapes
        return shapes

    def masks(
        self,
        example: torch.Tensor,
        seed: int,
        round: int,
        site_ids: Sequence[int] | np.ndarray,
        step: int,
        width: int,
    ) -> list[torch.Tensor]:
        """Each layer's masks ``(n_sites, width, *shape)`` for one local step.

        Row-major draws from a generator per (site, layer): a site's mask for example slot
        ``j`` does not depend on the batch width or on the other sites.
        """
        shapes = self.shapes(example)
        out = []
        for li, ((_, mod), shape) in enumerate(zip(self.layers, shapes)):
            keep = 1.0 - float(mod.p)
            rows = []
            for s in site_ids:
                g = torch.Generator().manual_seed(_seed(seed, round, int(s), step, li))
                u = torch.rand((width, *shape), generator=g)
                rows.append((u < keep).to(torch.float32).div_(keep))
            out.append(torch.stack(rows))
        return out

    @contextmanager
    def applied(self) -> Iterator[None]:
        """Dropout layers in eval mode with a hook applying :meth:`use`'s masks."""
        modes = [m.training for _, m in self.layers]
        hooks = []
        for i, (_, mod) in enumerate(self.layers):
            def apply(m: nn.Module, inp: Any, out: torch.Tensor, i: int = i) -> torch.Tensor:
                if self._current is None:
                    return out
                return out * self._current[i]

            mod.eval()
            hooks.append(mod.register_forward_hook(apply))
        try:
            yield
        finally:
            for h in hooks:
                h.remove()
            for (_, m), t in zip(self.layers, modes):
                m.train(t)
            self._current = None

    def use(self, masks: list[torch.Tensor] | None) -> None:
        """Set the masks the hooks apply (inside ``vmap``: one site's slice)."""
        self._current = masks


def _seed(seed: int, round: int, site: int, step: int, layer: int) -> int:
    ss = np.random.SeedSequence([int(seed), int(round), int(site), int(step), int(layer), _TAG])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))
