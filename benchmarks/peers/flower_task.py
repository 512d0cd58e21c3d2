"""The Flower side of veil's simulation benchmark: data, model and the ClientApp.

Kept apart from ``flower_sim.py`` so that Ray workers import it by name (functions defined
in a script's ``__main__`` cannot be shipped to them with module-level caches intact).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

__all__ = ["N_SITES", "BATCH", "LR", "EPOCHS", "make_client_app", "mlp"]

N_SITES = 100
BATCH = 32
LR = 0.1
EPOCHS = 1


@lru_cache(maxsize=1)
def _site_shards() -> tuple[Any, Any, list[Any]]:
    """Digits training split and the 100 IID shards (cached once per Ray worker)."""
    import numpy as np
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    xtr, _, ytr, _ = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    perm = np.random.default_rng(0).permutation(len(ytr))
    shards = [np.sort(s) for s in np.array_split(perm, N_SITES)]
    return torch.from_numpy(xtr), torch.from_numpy(ytr), shards


def mlp() -> Any:
    from torch import nn

    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Linear(128, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def make_client_app(epochs: int = EPOCHS, batch: int = BATCH) -> Any:
    """A ClientApp whose ``train`` runs ``epochs`` local epochs of plain SGD (minibatches of
    ``batch``) on its shard."""
    import torch
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
    from flwr.clientapp import ClientApp

    client = ClientApp()

    @client.train()
    def train(msg: Message, context: Context) -> Message:
        torch.set_num_threads(1)
        site = int(context.node_config["partition-id"])
        x, y, shards = _site_shards()
        idx = torch.from_numpy(shards[site])
        xs, ys = x[idx], y[idx]
        model = mlp()
        model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        loss_fn = torch.nn.CrossEntropyLoss()
        gen = torch.Generator().manual_seed(1000 * int(msg.content["config"]["round"]) + site)
        for _ in range(epochs):
            order = torch.randperm(len(ys), generator=gen)
            for s in range(0, len(ys), batch):
                sel = order[s : s + batch]
                opt.zero_grad()
                loss_fn(model(xs[sel]), ys[sel]).backward()
                opt.step()
        reply = RecordDict(
            {
                "arrays": ArrayRecord(model.state_dict()),
                "metrics": MetricRecord({"num-examples": len(ys)}),
            }
        )
        return Message(content=reply, reply_to=msg)

    return client
