"""Layers the vectorised trainer cannot train, refused up front with the fix named.

The trainer trains every site of a round at once with ``torch.func.vmap`` over one
``functional_call``. Two kinds of layer do not fit that:

* BatchNorm keeps running statistics (buffers it updates in place during training),
  which would be shared by every site and mix their batches; and
* Dropout would draw its mask from torch's global generator inside ``vmap``, neither
  per-site nor seeded. The plain trainer draws per-site seeded masks itself
  (:mod:`veil.training.dropout`); DP-SGD's per-example engines do not yet, so there it
  is refused.

Refusals are a :class:`~veil.errors.ConfigError` naming the layer and the fix, instead of
a functorch traceback during the first round.
"""

from __future__ import annotations

from torch import nn

from veil.errors import ConfigError

__all__ = ["check_trainable"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def check_trainable(model: nn.Module, dropout: bool = True) -> None:
    """Refuse layers the vectorised federated trainer cannot train.

    Args:
        model: the user's model.
        dropout: whether the trainer supports Dropout (the plain trainer does; DP-SGD not).

    Raises:
        ConfigError: a BatchNorm (or running-statistics InstanceNorm) layer, or (with
            ``dropout=False``) a Dropout layer with ``p > 0``; the message names the layer
            and what to use instead.
    """
    for name, mod in model.named_modules():
        where = f"{name or 'the model'} ({type(mod).__name__})"
        if isinstance(mod, _NORMS) and (
            isinstance(mod, nn.modules.batchnorm._BatchNorm) or mod.track_running_stats
        ):
            raise ConfigError(
                f"layer {where} keeps running statistics, which the vectorised federated "
                "trainer cannot keep per site; replace it with nn.GroupNorm (for images, "
                "e.g. nn.GroupNorm(8, channels)) or nn.LayerNorm, which need no running "
                "statistics",
                key="model",
            )
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0 and not dropout:
            raise ConfigError(
                f"layer {where} is not supported under sample-level DP (DP-SGD's "
                "per-example engines draw no dropout masks yet); remove it or set p=0, or "
                "use client-level DP, where Dropout works",
                key="model",
            )
