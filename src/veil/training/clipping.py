"""Per-example gradient clipping, vectorised across sites, without per-example gradients.

For a batch at each of ``n`` sites (``(n, B, ...)``), :class:`PerExampleClipper` returns
``Σ_i c_i g_i`` per site, where ``g_i`` is example *i*'s gradient and
``c_i = mask_i · min(1, C / (‖g_i‖ + 1e-6))`` (Opacus' clipping factor, so the result is
the same as Opacus' up to float rounding; the tests check it).

The ``"ghost"`` engine follows Goodfellow (2015) / Li et al. (2022, "ghost clipping"):

1. One forward pass; forward hooks record each Linear/Conv2d layer's input ``a`` and add
   a zero *probe* to its output, so one backward pass of ``Σ_i loss_i`` gives every
   layer's output gradient ``δ`` (per example, since examples do not interact).
2. Per-example squared norms: for a Linear layer on ``(B, in)`` inputs,
   ``‖g_i‖² = ‖a_i‖² ‖δ_i‖²`` (+ ``‖δ_i‖²`` for the bias); on sequences, the smaller of
   ``⟨a_i a_iᵀ, δ_i δ_iᵀ⟩`` and the materialised ``δ_iᵀ a_i``; for Conv2d the per-example
   gradient ``δ_i · unfold(a_i)ᵀ`` is small and is materialised.
3. The clipped sum is one reweighted matmul per layer: ``Σ_i c_i δ_iᵀ a_i = (c ⊙ δ)ᵀ a``.

For chains of Flatten/Linear/ReLU/Tanh/Sigmoid (veil's MLP and logistic regression; the
same tracing as :mod:`veil.training.chain`) the
forward and backward passes are written out with batched matrix products instead of
autograd, which removes most of the per-step overhead on small models.

Models with parameters outside Linear/Conv2d (or a layer called twice per forward) use
the ``"vmap"`` engine: per-example gradients from ``torch.func`` (materialised).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from veil.errors import ConfigError
from veil.training.chain import linear_chain
from veil.training.data import per_example_loss

__all__ = ["PerExampleClipper", "ENGINES"]

ENGINES = ("auto", "ghost", "vmap")  # auto: chain, else ghost, else vmap
_EPS = 1e-6  # Opacus' clip factor: C / (norm + 1e-6)


def _ghost_layers(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """(prefix, module) of every Linear/Conv2d, or None if some parameter lies elsewhere."""
    layers: list[tuple[str, nn.Module]] = []
    covered: set[str] = set()
    for prefix, mod in model.named_modules():
        own = [n for n, _ in mod.named_parameters(recurse=False)]
        if not own:
            continue
        ok = isinstance(mod, nn.Linear) or (
            isinstance(mod, nn.Conv2d)
            and mod.groups == 1
            and mod.padding_mode == "zeros"
            and not isinstance(mod.padding, str)
        )
        if not ok:
            return None
        layers.append((prefix, mod))
        covered.update(f"{prefix}.{n}" if prefix else n for n in own)
    names = {n for n, _ in model.named_parameters()}
    return layers if covered == names else None


class PerExampleClipper:
    """Clipped per-example gradient sums for stacked per-site parameters.

    Args:
        model: the architecture (its own parameter values are not used).
        names: parameter names, in the trainer's order.
        task: ``"classification"`` or ``"regression"``.
        engine: ``"auto"`` (ghost when the model allows it), ``"ghost"`` or ``"vmap"``.

    Raises:
        ConfigError: ``engine="ghost"`` for a model it does not support, or unknown engine.
    """

    def __init__(
        self, model: nn.Module, names: Sequence[str], task: str, engine: str = "auto"
    ) -> None:
        if engine not in ENGINES:
            raise ConfigError(f"unknown engine {engine!r}; choose one of {ENGINES}")
        self.model = model
        self.names = list(names)
        self.task = task
        layers = _ghost_layers(model)
        if engine == "ghost" and layers is None:
            raise ConfigError(
                "the ghost clipping engine supports models whose parameters all sit in "
                "nn.Linear / nn.Conv2d (groups=1) layers; use engine='vmap'"
            )
        self.layers = layers if engine != "vmap" else None
        self.chain: list[tuple[str, str, str | None]] | None = None
        if self.layers is not None and engine == "auto":
            self.chain = _chain_ops(model, self.names)
        self._shapes: dict[tuple[int, ...], list[torch.Size]] = {}

    @property
    def engine(self) -> str:
        """The engine in use: ``"chain"``, ``"ghost"`` (hooks) or ``"vmap"``."""
        if self.chain is not None:
            return "chain"
        return "ghost" if self.layers is not None else "vmap"

    # -- public --------------------------------------------------------------------------
    def clipped_sum(
        self,
        params: dict[str, torch.Tensor],
        xb: torch.Tensor,
        yb: torch.Tensor,
        mb: torch.Tensor,
        max_norm: float,
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per site, the sum of clipped per-example gradients over the masked batch.

        Args:
            params: stacked parameters, ``(n, *shape)`` each.
            xb: inputs ``(n, B, ...)``; yb: labels ``(n, B)``; mb: 0/1 mask ``(n, B)``.
            max_norm: clip bound C.

        Returns:
            ``(sums, norms)``: clipped sums ``(n, *shape)`` per parameter and the
            per-example gradient norms ``(n, B)`` before clipping.
        """
        if self.chain is not None and (xb.dim() == 3 or self.chain[0][0] == "flatten"):
            return self._chain(params, xb, yb, mb, max_norm)
        if self.layers is not None:
            shapes = self._probe_shapes(params, xb)
            if shapes is not None:
                return self._ghost(params, xb, yb, mb, max_norm, shapes)
        return self._vmap(params, xb, yb, mb, max_norm)

    # -- ghost engine --------------------------------------------------------------------
    def _forward_fn(
        self, probes_given: bool
    ) -> Callable[..., tuple[torch.Tensor, tuple[torch.Tensor, ...]]]:
        mods = [m for _, m in self.layers or []]

        def f(params: dict[str, torch.Tensor], x: torch.Tensor, probes: Sequence[torch.Tensor]):
            acts: list[torch.Tensor] = []
            handles = []
            for i, mod in enumerate(mods):

                def hook(
                    _m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor, i: int = i
                ):
                    acts.append(inp[0])
                    return out + probes[i] if probes_given else out

                handles.append(mod.register_forward_hook(hook))
            try:
                out = functional_call(self.model, params, (x,))
            finally:
                for h in handles:
                    h.remove()
            return out, tuple(acts)

        return f

    def _probe_shapes(
        self, params: dict[str, torch.Tensor], xb: torch.Tensor
    ) -> list[torch.Size] | None:
        """Output shape (per example) of every ghost layer; None if a layer runs twice."""
        key = tuple(xb.shape[2:])
        if key in self._shapes:
            return self._shapes[key]
        mods = [m for _, m in self.layers or []]
        seen: list[tuple[int, torch.Size]] = []
        handles = [
            m.register_forward_hook(lambda mod, i, o, j=j: seen.append((j, o.shape[1:])))
            for j, m in enumerate(mods)
        ]
        try:
            with torch.no_grad():
                p0 = {k: v[0] for k, v in params.items()}
                functional_call(self.model, p0, (xb[0, :1],))
        finally:
            for h in handles:
                h.remove()
        if sorted(j for j, _ in seen) != list(range(len(mods))):
            self.layers = None  # a layer was skipped or reused: fall back for good
            return None
        shapes = [s for _, s in sorted(seen, key=lambda t: t[0])]
        self._shapes[key] = shapes
        return shapes

    def _ghost(self, params, xb, yb, mb, max_norm, shapes):  # type: ignore[no-untyped-def]
        n, b = yb.shape
        leaves = {k: v.detach() for k, v in params.items()}
        probes = [torch.zeros((n, b, *s), requires_grad=True) for s in shapes]
        f = self._forward_fn(True)
        if n == 1:
            out, acts = f({k: v[0] for k, v in leaves.items()}, xb[0], [p[0] for p in probes])
            out = out.unsqueeze(0)
            acts = tuple(a.unsqueeze(0) for a in acts)
        else:
            out, acts = vmap(f)(leaves, xb, probes)
        losses = per_example_loss(out.reshape(n * b, *out.shape[2:]), yb.reshape(-1), self.task)
        deltas = torch.autograd.grad(losses.sum(), probes)
        acts = tuple(a.detach() for a in acts)
        sq = torch.zeros(n, b)
        prepared = []
        for (_, mod), a, d in zip(self.layers or [], acts, deltas):
            s, prep = _layer_sq_norms(mod, a, d)
            sq += s
            prepared.append(prep)
        norms = sq.sqrt()
        c = (max_norm / (norms + _EPS)).clamp(max=1.0) * mb
        sums: dict[str, torch.Tensor] = {}
        for (prefix, mod), prep in zip(self.layers or [], prepared):
            w, bias = _layer_weighted_sum(mod, prep, c)
            pre = f"{prefix}." if prefix else ""
            sums[pre + "weight"] = w
            if mod.bias is not None:
                sums[pre + "bias"] = bias
        return {k: sums[k] for k in self.names}, norms

    # -- linear chains: hand-written forward/backward --------------------------------------
    def _chain(self, params, xb, yb, mb, max_norm):  # type: ignore[no-untyped-def]
        n, b = yb.shape
        h = xb.reshape(n, b, -1) if self.chain and self.chain[0][0] == "flatten" else xb
        saved: list[torch.Tensor | None] = []
        for kind, wn, bn in self.chain or []:
            if kind == "flatten":
                h = h.reshape(n, b, -1)
                saved.append(None)
            elif kind == "linear":
                saved.append(h)
                wt = params[wn].transpose(1, 2)
                h = (
                    torch.bmm(h, wt)
                    if bn is None
                    else torch.baddbmm(params[bn].unsqueeze(1), h, wt)
                )
            else:
                h = getattr(torch, kind)(h)
                saved.append(h)
        # d(Σ_i loss_i)/d(output): each example's own loss gradient
        if self.task == "regression":
            dz = (h - yb.to(h.dtype).view(n, b, 1)) * 2.0
        else:
            dz = torch.softmax(h, dim=-1)
            dz.scatter_add_(-1, yb.unsqueeze(-1), torch.full((n, b, 1), -1.0))
        layers: list[tuple[str, str | None, torch.Tensor, torch.Tensor]] = []
        sq: torch.Tensor | None = None
        ops = self.chain or []
        first = next(i for i, op in enumerate(ops) if op[0] == "linear")
        for i in range(len(ops) - 1, first - 1, -1):
            kind, wn, bn = ops[i]
            s = saved[i]
            if kind == "linear":
                assert s is not None  # a linear layer saved its input
                dn = dz.pow(2).sum(-1)
                t = s.pow(2).sum(-1) * dn  # ‖a_i‖² ‖δ_i‖²
                if bn is not None:
                    t = t + dn
                sq = t if sq is None else sq + t
                layers.append((wn, bn, s, dz))
                if i == first:
                    break
                dz = torch.bmm(dz, params[wn])
            elif kind == "relu":
                dz = torch.ops.aten.threshold_backward(dz, s, 0)
            elif kind == "tanh":
                dz = torch.ops.aten.tanh_backward(dz, s)
            elif kind == "sigmoid":
                dz = torch.ops.aten.sigmoid_backward(dz, s)
        norms = sq.sqrt()  # type: ignore[union-attr]
        c = ((max_norm / (norms + _EPS)).clamp_(max=1.0) * mb).unsqueeze(-1)
        sums: dict[str, torch.Tensor] = {}
        for wn, bn, s, d in layers:
            dc = d * c
            sums[wn] = torch.bmm(dc.transpose(1, 2), s)
            if bn is not None:
                sums[bn] = dc.sum(1)
        return {k: sums[k] for k in self.names}, norms

    # -- vmap engine ---------------------------------------------------------------------
    def _vmap(self, params, xb, yb, mb, max_norm):  # type: ignore[no-untyped-def]
        def loss_one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            out = functional_call(self.model, p, (x.unsqueeze(0),))
            return per_example_loss(out, y.unsqueeze(0), self.task).sum()

        per_site = vmap(vmap(grad(loss_one), in_dims=(None, 0, 0)), in_dims=(0, 0, 0))
        g = per_site({k: v.detach() for k, v in params.items()}, xb, yb)
        n, b = yb.shape
        sq = sum(g[k].reshape(n, b, -1).pow(2).sum(-1) for k in self.names)
        norms = torch.as_tensor(sq).sqrt()
        c = (max_norm / (norms + _EPS)).clamp(max=1.0) * mb
        sums = {k: torch.einsum("nb,nb...->n...", c, g[k]) for k in self.names}
        return sums, norms


def _chain_ops(model: nn.Module, names: list[str]) -> list[tuple[str, str, str | None]] | None:
    """The model as (kind, weight name, bias name) steps, if it is a plain linear chain."""
    numels = [p.numel() for _, p in model.named_parameters()]
    ops = linear_chain(model, names, numels)
    if ops is None:
        return None
    by_offset: dict[int, str] = {}
    i = 0
    for name, k in zip(names, numels):
        by_offset[i] = name
        i += k
    out: list[tuple[str, str, str | None]] = []
    for op in ops:
        if op.kind == "linear":
            out.append(("linear", by_offset[op.w[0]], by_offset[op.b] if op.b >= 0 else None))
        else:
            out.append((op.kind, "", None))
    return out


def _layer_sq_norms(mod: nn.Module, a: torch.Tensor, d: torch.Tensor):  # type: ignore[no-untyped-def]
    """Per-example squared gradient norm of one layer, and what the weighted sum needs."""
    n, b = d.shape[:2]
    if isinstance(mod, nn.Linear):
        if a.dim() == 3:  # (n, B, in): the ghost norm identity
            sq = a.pow(2).sum(-1) * d.pow(2).sum(-1)
            if mod.bias is not None:
                sq = sq + d.pow(2).sum(-1)
            return sq, ("lin", a, d)
        a3 = a.reshape(n * b, -1, a.shape[-1])  # (nB, T, in)
        d3 = d.reshape(n * b, -1, d.shape[-1])  # (nB, T, out)
        t = a3.shape[1]
        if t * t <= a3.shape[2] * d3.shape[2]:
            sq = (torch.bmm(a3, a3.transpose(1, 2)) * torch.bmm(d3, d3.transpose(1, 2))).sum((1, 2))
            prep = ("seq", a3, d3)
        else:
            g = torch.bmm(d3.transpose(1, 2), a3)  # (nB, out, in)
            sq = g.pow(2).sum((1, 2))
            prep = ("mat", g, d3.sum(1))
        if mod.bias is not None:
            sq = sq + d3.sum(1).pow(2).sum(-1)
        return sq.view(n, b), prep
    # Conv2d: materialise the (small) per-example weight gradient
    # (only Linear and Conv2d reach here: _ghost_layers admits nothing else, and only
    # with numeric padding)
    assert isinstance(mod, nn.Conv2d) and not isinstance(mod.padding, str)
    cols = nn.functional.unfold(
        a.reshape(n * b, *a.shape[2:]),
        mod.kernel_size,
        dilation=mod.dilation,
        padding=mod.padding,
        stride=mod.stride,
    )  # (nB, C k k, L)
    d3 = d.reshape(n * b, d.shape[2], -1)  # (nB, O, L)
    g = torch.bmm(d3, cols.transpose(1, 2))  # (nB, O, C k k)
    sq = g.pow(2).sum((1, 2))
    bsum = d3.sum(-1)
    if mod.bias is not None:
        sq = sq + bsum.pow(2).sum(-1)
    return sq.view(n, b), ("mat", g, bsum)


def _layer_weighted_sum(mod: nn.Module, prep, c: torch.Tensor):  # type: ignore[no-untyped-def]
    """``Σ_i c_i g_i`` for a layer's weight and bias, per site."""
    kind = prep[0]
    n, b = c.shape
    assert isinstance(mod, (nn.Linear, nn.Conv2d))  # see _ghost_layers
    shape = mod.weight.shape
    if kind == "lin":
        _, a, d = prep
        dc = d * c.unsqueeze(-1)
        w = torch.bmm(dc.transpose(1, 2), a)  # (n, out, in)
        return w, dc.sum(1)
    if kind == "seq":
        _, a3, d3 = prep
        cf = c.reshape(n * b, 1, 1)
        dc = (d3 * cf).reshape(n, -1, d3.shape[-1])  # (n, B*T, out)
        w = torch.bmm(dc.transpose(1, 2), a3.reshape(n, -1, a3.shape[-1]))
        return w, dc.sum(1)
    _, g, bsum = prep
    cf = c.reshape(n, b, 1, 1)
    w = (g.reshape(n, b, *g.shape[1:]) * cf).sum(1).reshape(n, *shape)
    bias = (bsum.reshape(n, b, -1) * c.unsqueeze(-1)).sum(1)
    return w, bias
