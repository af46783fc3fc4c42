"""A tiny trainable System + dataset for engine tests (and the DDP worker script).

Linear regression with a random augmentation in the dataset (torch.rand) and random noise in the
training step (torch.randn), so exact resume has to restore both the data RNG and the model RNG.
"""
import torch
from torch import nn
from torch.utils.data import Dataset

from fmdepth.config import config_from_dict
from fmdepth.core.system import StepOutput
from fmdepth.core.task import Task


class TinyData(Dataset):
    def __init__(self, n=40, dim=4, seed=123):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        w = torch.arange(1, dim + 1, dtype=torch.float32)
        self.y = self.x @ w[:, None] + 0.5

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        # "augmentation": random jitter drawn from the global torch RNG
        return {"x": self.x[i] + 0.01 * torch.rand(self.x.shape[1]), "y": self.y[i]}


class TinySystem(nn.Module):
    def __init__(self, dim=4, hidden=8, nan_steps=(), interrupt_at=None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.nan_steps = set(nan_steps)
        self.interrupt_at = interrupt_at

    def training_step(self, batch, step, want_images=False):
        if self.interrupt_at is not None and step == self.interrupt_at:
            raise KeyboardInterrupt
        pred = self.net(batch["x"]) + 0.001 * torch.randn(batch["x"].shape[0], 1)
        loss = ((pred - batch["y"]) ** 2).mean()
        if step in self.nan_steps:
            loss = loss * float("nan")
        images = {}
        if want_images:
            images["pred"] = torch.rand(3, 8, 8)
        return StepOutput(loss=loss, scalars={"mse": float(loss.detach())}, images=images)

    def parameter_groups(self):
        return [{"params": list(self.net.parameters())}]

    def trainable_models(self):
        return {"tiny": self.net}


def tiny_validate(system, loader, device):
    err, n = 0.0, 0
    for batch in loader:
        pred = system.net(batch["x"].to(device))
        err += float(((pred - batch["y"].to(device)) ** 2).sum())
        n += len(pred)
    return {"mse": err / n}


def tiny_task(hidden=8, with_val=True, **kw):
    torch.manual_seed(0)  # same initial weights in every run (train() seeds only what it builds)
    return Task(system=TinySystem(hidden=hidden, **kw), train_set=TinyData(),
                val_set=TinyData(n=8, seed=7) if with_val else None,
                validate=tiny_validate if with_val else None, best_metric="mse", best_mode="min")


def tiny_config(**train):
    t = {"epochs": 3, "batch_size": 4, "log_every": 1, "image_every": 5, "device": "cpu"}
    t.update(train)
    return config_from_dict({"seed": 3, "data": {"num_workers": 0},
                             "optim": {"lr": 0.05, "warmup_steps": 3, "decay_epochs": [2]},
                             "train": t})
