"""Layers the vectorised trainer cannot train, refused up front with the fix named.

The trainer trains every site of a round at once with ``torch.func.vmap`` over one
``functional_call``. Two kinds of layer do not fit that:

* BatchNorm keeps running statistics (buffers it updates in place during training),
  which would be shared by every site and mix their batches; and
* Dropout draws its mask from torch's global generator inside ``vmap``, which is neither
  per-site nor seeded, so a site's update would depend on which sites shared its round.

Both are refused with a :class:`~veil.errors.ConfigError` naming the layer, instead of a
functorch traceback during the first round.
"""

from __future__ import annotations

from torch import nn

from veil.errors import ConfigError

__all__ = ["check_trainable"]

_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)


def check_trainable(model: nn.Module) -> None:
    """Refuse layers the vectorised federated trainer cannot train.

    Args:
        model: the user's model.

    Raises:
        ConfigError: a BatchNorm (or running-statistics InstanceNorm) layer, or a Dropout
            layer with ``p > 0``; the message names the layer and what to use instead.
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
        if isinstance(mod, nn.modules.dropout._DropoutNd) and mod.p > 0:
            raise ConfigError(
                f"layer {where} is not supported by the vectorised federated trainer yet "
                "(its mask would not be per-site or seeded); remove it or set p=0, and "
                "regularise with local.weight_decay or client-level DP instead",
                key="model",
            )
