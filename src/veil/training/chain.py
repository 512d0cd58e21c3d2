"""Linear chains: models that trace to Flatten/Linear/ReLU/Tanh/Sigmoid, and their
hand-written forward and backward passes over stacked per-site weights.

For such models (veil's MLP and logistic regression) batched matrix products
(``torch.baddbmm``/``torch.bmm``) replace autograd, which removes most of the per-step
overhead on small models. While every site still holds the global parameters (the first
step of a round) the forward pass and the back-propagated errors use one shared matrix
product for all sites; only the weight gradients, which differ by site, are batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["ChainOp", "linear_chain", "chain_gradients"]


@dataclass(frozen=True)
class ChainOp:
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


def linear_chain(model: nn.Module, names: list[str], numels: list[int]) -> list[ChainOp] | None:
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
    ops: list[ChainOp] = []
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
                    ChainOp("linear", (offsets[wn], m.out_features, m.in_features),
                        offsets[bn] if m.bias is not None else -1)
                )
            elif isinstance(m, nn.Flatten) and m.start_dim == 1 and m.end_dim == -1:
                ops.append(ChainOp("flatten"))
            elif type(m) in _ACT_MODULES:
                ops.append(ChainOp(_ACT_MODULES[type(m)]))
            elif not isinstance(m, nn.Identity):
                return None
        elif node.op == "call_function" and node.target in _ACT_FUNCS and not extra and not kwargs:
            ops.append(ChainOp(_ACT_FUNCS[node.target]))
        elif node.op == "call_method" and node.target in ("relu", "tanh", "sigmoid"):
            if extra or kwargs:
                return None
            ops.append(ChainOp(str(node.target)))
        elif (node.op == "call_method" and node.target == "flatten") or (
            node.op == "call_function" and node.target is torch.flatten
        ):
            if tuple(extra) != (1,) or kwargs:
                return None
            ops.append(ChainOp("flatten"))
        else:
            return None
        cur = node
    if used != set(names) or not any(op.kind == "linear" for op in ops):
        return None
    return ops


def chain_gradients(
    chain: list[ChainOp],
    task: str,
    params: torch.Tensor,
    xb: torch.Tensor,
    yb: torch.Tensor,
    mb: torch.Tensor,
    out: torch.Tensor,
    scratch: dict[int, torch.Tensor],
    scale: float = 1.0,
) -> torch.Tensor:
    """``scale`` x per-site gradients of the masked mean loss of a linear chain, into ``out``.

    ``params`` is the shared ``(d,)`` global vector or the stacked ``(n, d)`` one. The
    weight gradients go through ``scratch`` buffers kept between calls (a contiguous bmm
    result is much faster than one written into a strided view of ``out``).
    """
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
    if task == "regression":
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
            dw = scratch.get(i)
            if dw is None or dw.shape != (n, fo, fi):
                dw = scratch[i] = torch.empty(n, fo, fi)
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


