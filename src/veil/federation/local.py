"""Local training at the sites, vectorised across sites.

Every site in a round runs the same number of local steps of minibatch SGD on its own data
from the same global model. Instead of looping over sites, veil stacks the sites' copies of
the parameters and computes all their gradients in one call with ``torch.func.vmap``.
Sites with less data are padded and masked: a masked example contributes nothing, and a
site whose data is used up stops updating (its momentum too), so each site's update is
exactly what it would be if it trained alone (see :func:`train_site_reference`, which the
tests compare against).

Batch schedules are seeded per (seed, round, site): a site's shuffling does not depend on
which other sites are in the cohort, so results are reproducible and resumable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, vmap

from veil.errors import ConfigError, DataError
from veil.models.params import flat_params, load_flat_params

__all__ = [
    "LocalConfig",
    "SiteData",
    "VectorisedTrainer",
    "batch_schedule",
    "flat_params",
    "load_flat_params",
    "train_site_reference",
    "per_example_loss",
]


@dataclass(frozen=True)
class LocalConfig:
    """Local training hyper-parameters (the same at every site).

    Attributes:
        epochs: passes over the site's data per round.
        batch_size: minibatch size.
        lr: learning rate.
        momentum: SGD momentum (0 = plain SGD).
        weight_decay: L2 penalty added to the gradient.
    """

    epochs: int = 1
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0


class SiteData:
    """The sites' training data, padded into one tensor for vectorised access.

    Args:
        x: full training features.
        y: full training labels.
        parts: one index array per site (from :func:`veil.data.partition`).
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, parts: Sequence[np.ndarray]) -> None:
        if len(x) != len(y):
            raise DataError(f"features ({len(x)}) and labels ({len(y)}) differ in length")
        self.n_sites = len(parts)
        self.sizes = np.asarray([len(p) for p in parts], dtype=np.int64)
        if self.n_sites == 0 or self.sizes.min() < 1:
            raise DataError("every site needs at least one training example")
        m = int(self.sizes.max())
        xs = np.zeros((self.n_sites, m) + x.shape[1:], dtype=np.float32)
        ys = np.zeros((self.n_sites, m), dtype=y.dtype)
        for i, p in enumerate(parts):
            xs[i, : len(p)] = x[p]
            ys[i, : len(p)] = y[p]
        self.x = torch.from_numpy(xs)
        self.y = torch.from_numpy(ys)

    def site(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Site ``i``'s examples (unpadded)."""
        n = int(self.sizes[i])
        return self.x[i, :n], self.y[i, :n]


def per_example_loss(out: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """Loss of each example: cross-entropy for classification, squared error for regression."""
    if task == "regression":
        return (out.reshape(-1) - y.to(out.dtype)) ** 2
    return nn.functional.cross_entropy(out, y, reduction="none")


@overload
def _splitmix64(x: np.uint64) -> np.uint64: ...
@overload
def _splitmix64(x: np.ndarray) -> np.ndarray: ...
def _splitmix64(x: np.ndarray | np.uint64) -> np.ndarray | np.uint64:
    """SplitMix64 finaliser: a fast, well-mixed hash of 64-bit words (not for privacy)."""
    with np.errstate(over="ignore"):
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def batch_schedule(
    sizes: np.ndarray, site_ids: np.ndarray, batch_size: int, epochs: int, seed: int, round: int
) -> tuple[np.ndarray, np.ndarray]:
    """Minibatch indices for each site, padded to a common number of steps.

    Each site's shuffle of each epoch is a permutation keyed by a hash of
    (seed, round, site id, epoch, example), so it does not depend on which other sites are
    in the batch. The batch width is ``min(batch_size, largest site)``.

    Returns:
        ``(idx, mask)`` with shape ``(steps, n_sites, width)``: ``idx`` indexes a site's
        padded data, ``mask`` is 1 where the slot holds a real example.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    site_ids = np.asarray(site_ids, dtype=np.uint64)
    n = len(sizes)
    width = int(min(batch_size, sizes.max()))
    spe = -(-sizes // width)  # ceil: steps per epoch per site
    max_spe = int(spe.max())
    steps = epochs * max_spe
    slots = max_spe * width
    idx = np.zeros((epochs, n, slots), dtype=np.int64)
    mask = np.zeros((epochs, n, slots), dtype=np.float32)
    m = int(sizes.max())
    ex = np.arange(m, dtype=np.uint64)
    base = _splitmix64(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) ^ _splitmix64(np.uint64(round)))
    for e in range(epochs):
        h = _splitmix64(base ^ _splitmix64(site_ids * np.uint64(0x100000001B3) + np.uint64(e)))
        keys = _splitmix64(h[:, None] ^ (ex[None, :] * np.uint64(0xD6E8FEB86659FD93)))
        keys[ex[None, :] >= sizes[:, None].astype(np.uint64)] = np.uint64(0xFFFFFFFFFFFFFFFF)
        perm = np.argsort(keys, axis=1, kind="stable")
        # site i's b-th batch holds perm[i, b*width:(b+1)*width] (only the real ones)
        valid = np.arange(m)[None, :] < sizes[:, None]
        idx[e, :, :m] = perm
        mask[e, :, :m] = valid
    idx = idx.reshape(epochs, n, max_spe, width).transpose(0, 2, 1, 3).reshape(steps, n, width)
    mask = mask.reshape(epochs, n, max_spe, width).transpose(0, 2, 1, 3).reshape(steps, n, width)
    return np.ascontiguousarray(idx), np.ascontiguousarray(mask)


@dataclass(frozen=True)
class _Op:
    """One step of a linear chain: ``flatten``, ``linear`` (with offsets) or an activation."""

    kind: str  # "flatten" | "linear" | "relu" | "tanh" | "sigmoid"
    w: tuple[int, int, int] = (0, 0, 0)  # weight offset, out features, in features
    b: int = -1  # bias offset, -1 when the layer has no bias


_ACT_MODULES = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}
_ACT_FUNCS = {
    torch.relu: "relu",
    nn.functional.relu: "relu",
    torch.tanh: "tanh",
    nn.functional.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    nn.functional.sigmoid: "sigmoid",
}


def _linear_chain(model: nn.Module, names: list[str], numels: list[int]) -> list[_Op] | None:
    """Describe ``model`` as a chain of Flatten/Linear/ReLU/Tanh/Sigmoid, or ``None``.

    The model is traced with ``torch.fx``; anything that is not a straight chain of those
    operations (a convolution, a residual connection, control flow that does not trace)
    returns ``None`` and the trainer uses its generic ``vmap`` path instead.
    """
    from torch import fx

    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure just means "no fast path"
        return None
    offsets: dict[str, int] = {}
    i = 0
    for name, k in zip(names, numels):
        offsets[name] = i
        i += k
    mods = dict(gm.named_modules())
    ops: list[_Op] = []
    used: set[str] = set()
    cur: fx.Node | None = None
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if cur is not None:
                return None
            cur = node
            continue
        if cur is None or not node.args or node.args[0] is not cur or len(cur.users) != 1:
            return None
        extra, kwargs = node.args[1:], {k: v for k, v in node.kwargs.items() if k != "inplace"}
        if node.op == "output":
            break
        if node.op == "call_module":
            m = mods[str(node.target)]
            if extra or kwargs:
                return None
            if isinstance(m, nn.Linear):
                wn, bn = f"{node.target}.weight", f"{node.target}.bias"
                if m.weight.dtype != torch.float32 or wn not in offsets:
                    return None
                used.add(wn)
                if m.bias is not None:
                    used.add(bn)
                ops.append(
                    _Op("linear", (offsets[wn], m.out_features, m.in_features),
                        offsets[bn] if m.bias is not None else -1)
                )
            elif isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
                ops.append(_Op("flatten"))
            elif type(m) in _ACT_MODULES:
                ops.append(_Op(_ACT_MODULES[type(m)]))
            elif not isinstance(m, nn.Identity):
                return None
        elif node.op == "call_function" and node.target in _ACT_FUNCS and not extra and not kwargs:
            ops.append(_Op(_ACT_FUNCS[node.target]))
        elif node.op == "call_method" and node.target in ("relu", "tanh", "sigmoid"):
            if extra or kwargs:
                return None
            ops.append(_Op(str(node.target)))
        elif (node.op == "call_method" and node.target == "flatten") or (
            node.op == "call_function" and node.target is torch.flatten
        ):
            if tuple(extra) != (1,) or kwargs:
                return None
            ops.append(_Op("flatten"))
        else:
            return None
        cur = node
    if used != set(names) or not any(op.kind == "linear" for op in ops):
        return None
    return ops


class VectorisedTrainer:
    """Local SGD for many sites at once; each site's result equals training it alone.

    Two paths compute the per-site gradients, with the same results:

    * **Linear chains** (models that trace to Flatten/Linear/ReLU/Tanh/Sigmoid, such as
      veil's MLP and logistic regression): a hand-written forward and backward over the
      stacked weights with ``torch.baddbmm``/``torch.bmm``. While every site still holds
      the global parameters (the first step of a round) the forward pass and the
      back-propagated errors use one shared matrix product for all sites; only the weight
      gradients, which differ by site, are batched.
    * **Anything else** (CNNs, user modules): ``torch.func.vmap`` over
      ``functional_call`` and one autograd backward of the summed site losses.

    A subclass that overrides :meth:`site_gradients`, :meth:`example_losses` or
    :meth:`_forward_one` (DP-SGD) always goes through :meth:`site_gradients`.

    Parameters live in one ``(n_sites, d)`` tensor updated in place; an update is the
    site's final parameters minus the global ones.

    Args:
        model: the architecture (its current parameters are not used; the global vector is).
        task: ``"classification"`` or ``"regression"``.
        config: local hyper-parameters.
        chunk: train at most this many sites per vectorised call (bounds memory).
        fast: allow the linear-chain fast path (``False`` forces the generic path).
    """

    def __init__(
        self,
        model: nn.Module,
        task: str,
        config: LocalConfig,
        chunk: int = 256,
        fast: bool = True,
    ) -> None:
        if config.batch_size < 1 or config.epochs < 1 or not config.lr > 0:
            raise ConfigError("local batch_size and epochs must be >= 1 and lr > 0", key="local")
        if config.momentum < 0 or config.weight_decay < 0:
            raise ConfigError("local momentum and weight_decay must be >= 0", key="local")
        if task not in ("classification", "regression"):
            raise ConfigError(f"unknown task {task!r}; use 'classification' or 'regression'")
        if chunk < 1:
            raise ConfigError(f"chunk must be >= 1, got {chunk}", key="local.chunk")
        self.model = model
        self.task = task
        self.config = config
        self.chunk = chunk
        self.names = [n for n, _ in model.named_parameters()]
        self.shapes = [p.shape for _, p in model.named_parameters()]
        self.numels = [p.numel() for _, p in model.named_parameters()]
        self.dim = sum(self.numels)
        self._forward = vmap(self._forward_one)
        cls = type(self)
        plain = (
            cls.site_gradients is VectorisedTrainer.site_gradients
            and cls.example_losses is VectorisedTrainer.example_losses
            and cls._forward_one is VectorisedTrainer._forward_one
        )
        self._chain = _linear_chain(model, self.names, self.numels) if fast and plain else None
        self._scratch: dict[int, torch.Tensor] = {}

    @property
    def fast_path(self) -> bool:
        """Whether gradients come from the linear-chain fast path (for 1-D features)."""
        return self._chain is not None

    # -- overridable pieces -------------------------------------------------------------
    def _forward_one(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, params, (x,))

    def example_losses(
        self, params: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor
    ) -> torch.Tensor:
        """Loss of every example at its site's parameters, shape ``(n_sites, batch)``."""
        out = self._forward(params, xb)
        n, b = yb.shape
        flat = per_example_loss(out.reshape(n * b, *out.shape[2:]), yb.reshape(-1), self.task)
        return flat.view(n, b)

    def schedule(
        self, sizes: np.ndarray, site_ids: np.ndarray, seed: int, round: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Batch indices and masks, ``(steps, n_sites, batch)`` each."""
        c = self.config
        return batch_schedule(sizes, site_ids, c.batch_size, c.epochs, seed, round)

    def site_gradients(
        self,
        params: dict[str, torch.Tensor],
        xb: torch.Tensor,
        yb: torch.Tensor,
        mb: torch.Tensor,
        site_ids: np.ndarray,
        step: int,
        round: int,
    ) -> dict[str, torch.Tensor]:
        """Gradient of each site's minibatch mean loss at its own parameters (stacked).

        Sites are independent, so the gradient of the sum of the sites' losses with respect
        to the stacked parameters is exactly the stack of the per-site gradients.
        """
        leaves = {k: v.detach().requires_grad_(True) for k, v in params.items()}
        losses = self.example_losses(leaves, xb, yb)
        total = ((losses * mb).sum(dim=1) / mb.sum(dim=1).clamp(min=1.0)).sum()
        grads = torch.autograd.grad(total, [leaves[k] for k in self.names])
        return dict(zip(self.names, grads))

    # -- the loop -----------------------------------------------------------------------
    def unflatten(self, flat: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
        """Broadcast a flat global vector into stacked per-site parameter tensors."""
        out = {}
        i = 0
        for name, shape, k in zip(self.names, self.shapes, self.numels):
            out[name] = flat[i : i + k].view(shape).unsqueeze(0).expand(n, *shape).clone()
            i += k
        return out

    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Stacked per-site parameters → ``(n, d)``."""
        n = next(iter(params.values())).shape[0]
        return torch.cat([params[k].reshape(n, -1) for k in self.names], dim=1)

    def _views(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-parameter views ``(n, *shape)`` into a ``(n, d)`` tensor (no copies)."""
        n = flat.shape[0]
        out = {}
        i = 0
        for name, shape, k in zip(self.names, self.shapes, self.numels):
            out[name] = flat[:, i : i + k].view(n, *shape)
            i += k
        return out

    def train(
        self,
        global_flat: torch.Tensor,
        data: SiteData,
        site_ids: np.ndarray,
        seed: int,
        round: int,
    ) -> torch.Tensor:
        """Train the given sites from ``global_flat``; return their updates ``(n, d)``.

        An update is the site's final parameters minus the global parameters.

        Raises:
            ConfigError: ``global_flat`` does not have the model's number of parameters.
        """
        site_ids = np.asarray(site_ids, dtype=np.int64)
        global_flat = global_flat.detach().to(torch.float32).reshape(-1)
        if global_flat.numel() != self.dim:
            raise ConfigError(
                f"global parameters have {global_flat.numel()} entries, the model {self.dim}"
            )
        outs = []
        for s in range(0, len(site_ids), self.chunk):
            ids = site_ids[s : s + self.chunk]
            outs.append(self._train_chunk(global_flat, data, ids, seed, round))
        if len(outs) == 1:
            return outs[0]
        return torch.cat(outs, dim=0) if outs else torch.zeros(0, self.dim)

    def _train_chunk(
        self, global_flat: torch.Tensor, data: SiteData, ids: np.ndarray, seed: int, round: int
    ) -> torch.Tensor:
        c = self.config
        n = len(ids)
        idx, mask = self.schedule(data.sizes[ids], ids, seed, round)
        steps = idx.shape[0]
        m = data.x.shape[1]
        x_all = data.x.reshape(data.x.shape[0] * m, *data.x.shape[2:])
        y_all = data.y.reshape(-1)
        gidx = torch.from_numpy((ids[None, :, None] * m + idx).reshape(steps, -1))
        active = mask.sum(axis=2) > 0  # (steps, n)
        fast = self._chain is not None and (x_all.dim() == 2 or self._chain[0].kind == "flatten")
        if fast and steps == 1 and not c.weight_decay and not c.momentum:
            # one plain SGD step from the global parameters: the update is -lr * gradient
            xb = x_all.index_select(0, gidx[0]).view(n, -1, *x_all.shape[1:])
            yb = y_all.index_select(0, gidx[0]).view(n, -1)
            mb = torch.from_numpy(mask[0])
            return self._chain_gradients(global_flat, xb, yb, mb, torch.empty(n, self.dim), -c.lr)
        params: torch.Tensor | None = None  # None while every site holds global_flat
        bufs: torch.Tensor | None = None
        # the fast path's gradients, one buffer reused at every step
        grad_buf = torch.empty(n if fast else 0, self.dim)
        for t in range(steps):
            xb = x_all.index_select(0, gidx[t]).view(n, -1, *x_all.shape[1:])
            yb = y_all.index_select(0, gidx[t]).view(n, -1)
            mb = torch.from_numpy(mask[t])
            if fast:
                current = global_flat if params is None else params
                g = self._chain_gradients(current, xb, yb, mb, grad_buf)
            else:
                if params is None:
                    params = global_flat.unsqueeze(0).expand(n, -1).clone()
                grads = self.site_gradients(self._views(params), xb, yb, mb, ids, t, round)
                g = torch.cat([grads[k].reshape(n, -1) for k in self.names], dim=1)
            a = None if active[t].all() else torch.from_numpy(active[t]).view(n, 1)
            if c.weight_decay:
                g.add_(global_flat if params is None else params, alpha=c.weight_decay)
            if c.momentum:
                if bufs is None:  # step 0: every site is active, buffer = gradient
                    bufs = g.clone() if t < steps - 1 else g
                elif a is None:
                    bufs.mul_(c.momentum).add_(g)
                else:
                    bufs = torch.where(a, bufs * c.momentum + g, bufs)
                g = bufs
            if params is None:
                if t == steps - 1:  # one step: the update is -lr * gradient
                    return g.mul_(-c.lr) if g is not bufs else g * -c.lr
                params = torch.add(global_flat, g, alpha=-c.lr)
            elif a is None:
                params.add_(g, alpha=-c.lr)
            else:
                params.addcmul_(a.to(g.dtype), g, value=-c.lr)
        if params is None:  # a schedule with no steps: nobody moved
            return torch.zeros(n, self.dim)
        return params.sub_(global_flat)

    def _chain_gradients(
        self,
        params: torch.Tensor,
        xb: torch.Tensor,
        yb: torch.Tensor,
        mb: torch.Tensor,
        out: torch.Tensor,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """``scale`` x per-site gradients of a linear chain into ``out`` ``(n, d)``.

        ``params`` is the shared ``(d,)`` global vector or the stacked ``(n, d)`` one. The
        weight gradients go through scratch buffers kept between calls (a contiguous bmm
        result is much faster than one written into a strided view of ``out``).
        """
        chain = self._chain or []
        n, b = yb.shape
        shared = params.dim() == 1
        h = xb
        saved: list[torch.Tensor | None] = []
        for op in chain:
            if op.kind == "flatten":
                h = h.reshape(n, b, -1)
                saved.append(None)
            elif op.kind == "linear":
                saved.append(h)
                off, fo, fi = op.w
                if shared:
                    w = params[off : off + fo * fi].view(fo, fi)
                    h2 = h.reshape(n * b, fi)
                    if op.b < 0:
                        h = (h2 @ w.t()).view(n, b, fo)
                    else:
                        h = torch.addmm(params[op.b : op.b + fo], h2, w.t()).view(n, b, fo)
                else:
                    w3 = params[:, off : off + fo * fi].view(n, fo, fi)
                    if op.b < 0:
                        h = torch.bmm(h, w3.transpose(1, 2))
                    else:
                        bias = params[:, op.b : op.b + fo].unsqueeze(1)
                        h = torch.baddbmm(bias, h, w3.transpose(1, 2))
            else:
                h = getattr(torch, op.kind)(h)
                saved.append(h)
        # d(sum over sites of the masked mean loss) / d(output)
        weight = (mb / mb.sum(dim=1, keepdim=True).clamp(min=1.0)).unsqueeze(-1)
        if self.task == "regression":
            dz = (h - yb.to(h.dtype).view(n, b, 1)) * (2.0 * weight)
        else:  # softmax - one-hot (written out: torch.softmax is slow on 10 classes)
            dz = (h - h.amax(dim=-1, keepdim=True)).exp_()
            dz.div_(dz.sum(dim=-1, keepdim=True))
            dz.scatter_add_(-1, yb.unsqueeze(-1), torch.full((n, b, 1), -1.0))
            dz.mul_(weight)
        first = next(i for i, op in enumerate(chain) if op.kind == "linear")
        for i in range(len(chain) - 1, first - 1, -1):
            op, s = chain[i], saved[i]
            if op.kind == "linear" and s is not None:
                off, fo, fi = op.w
                dw = self._scratch.get(i)
                if dw is None or dw.shape != (n, fo, fi):
                    dw = self._scratch[i] = torch.empty(n, fo, fi)
                torch.bmm(dz.transpose(1, 2).contiguous(), s, out=dw)
                torch.mul(dw, scale, out=out[:, off : off + fo * fi].view(n, fo, fi))
                if op.b >= 0:
                    torch.mul(dz.sum(dim=1), scale, out=out[:, op.b : op.b + fo])
                if i == first:
                    break
                if shared:
                    w = params[off : off + fo * fi].view(fo, fi)
                    dz = (dz.reshape(n * b, fo) @ w).view(n, b, fi)
                else:
                    dz = torch.bmm(dz, params[:, off : off + fo * fi].view(n, fo, fi))
            elif op.kind == "relu":
                dz = torch.ops.aten.threshold_backward(dz, s, 0)
            elif op.kind == "tanh":
                dz = torch.ops.aten.tanh_backward(dz, s)
            elif op.kind == "sigmoid":
                dz = torch.ops.aten.sigmoid_backward(dz, s)
            # flatten: features are already flat before the first linear layer
        return out


def train_site_reference(
    model: nn.Module,
    task: str,
    config: LocalConfig,
    global_flat: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    site_id: int,
    seed: int,
    round: int,
) -> torch.Tensor:
    """Train one site alone with an ordinary torch loop (the reference for the tests).

    Uses the same per-site batch schedule as the vectorised trainer.
    """
    import copy

    m = copy.deepcopy(model)
    load_flat_params(m, global_flat)
    opt = torch.optim.SGD(
        m.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    idx, mask = batch_schedule(
        np.asarray([len(y)]), np.asarray([site_id]), config.batch_size, config.epochs, seed, round
    )
    for t in range(idx.shape[0]):
        k = int(mask[t, 0].sum())
        if k == 0:
            continue
        sel = torch.from_numpy(idx[t, 0, :k])
        opt.zero_grad()
        loss = per_example_loss(m(x[sel]), y[sel], task).mean()
        loss.backward()
        opt.step()
    return flat_params(m) - global_flat
