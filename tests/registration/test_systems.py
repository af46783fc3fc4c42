"""Learned registration systems: one training step, NeMAR's two paths, checkpoint round trip."""
import os

import pytest
import torch

from fmdepth.config import load_config
from fmdepth.data.pairs import SyntheticPairDataset, collate_pairs
from fmdepth.models.registration import (TranslationRegistration, build_registration_system,
                                         load_registration_checkpoint)

SMALL = ["task=registration", "data.dataset=registration_pairs", "data.height=64", "data.width=64",
         "registration.unet_depth=3", "registration.unet_width=8", "registration.affine_width=8",
         "registration.translator_width=8", "registration.translator_blocks=1",
         "registration.discriminator_width=8", "registration.synthetic_pairs=4", "registration.val_pairs=2"]


def _batch():
    ds = SyntheticPairDataset(2, size=(64, 64), seed=0, rms=2.0)
    return collate_pairs([ds[0], ds[1]])


@pytest.mark.parametrize("method,similarity", [("affine", "mi"), ("deformable", "ngf"), ("deformable", "feature"),
                                               ("translation", "mse")])
def test_one_training_step_finite(method, similarity):
    cfg = load_config(None, SMALL + [f"registration.method={method}", f"registration.similarity={similarity}",
                                     "registration.supervised=0.1"])
    system = build_registration_system(cfg)
    out = system.training_step(_batch(), step=0, want_images=True)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    grads = [p.grad for m in system.trainable_models().values() for p in m.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert "fixed" in out.images and all(img.dim() == 3 for img in out.images.values())


def test_nemar_both_paths_and_gan_gradients():
    system = TranslationRegistration(depth=3, width=8, translator_width=8, translator_blocks=1, discriminator_width=8)
    with torch.no_grad():  # a non-zero flow so that the two paths differ
        system.net.head.bias.copy_(torch.tensor([1.5, -0.5]))
    out = system.training_step(_batch(), step=0, want_images=True)
    assert {"l1_both_paths", "gan_generator", "gan_discriminator", "bilateral"} <= set(out.scalars)
    assert "T_of_R" in out.images and "R_of_T" in out.images
    assert not torch.allclose(out.images["T_of_R"], out.images["R_of_T"])
    out.loss.backward()
    for name, module in system.trainable_models().items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name


def test_generator_term_does_not_train_discriminator():
    system = TranslationRegistration(depth=2, width=4, translator_width=4, translator_blocks=0, discriminator_width=4)
    x = torch.rand(1, 2, 64, 64, requires_grad=True)
    system._d_frozen(x).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0  # gradient reaches the generator side
    assert all(p.grad is None for p in system.discriminator.parameters())


def test_task_build_and_validate():
    from torch.utils.data import DataLoader

    from fmdepth.engine.task_registration import build

    task = build(load_config(None, SMALL))
    loader = DataLoader(task.val_set, batch_size=2, collate_fn=task.collate_fn)
    task.system.eval()
    with torch.no_grad():
        metrics = task.validate(task.system, loader, torch.device("cpu"))
    assert task.best_metric == "lre_mean" and task.best_metric in metrics
    assert metrics["lre_mean"] == pytest.approx(metrics["lre_mean_before"])  # identity at init


def test_checkpoint_round_trip(tmp_path):
    from fmdepth.config import config_to_dict
    from fmdepth.engine.checkpoint import save_checkpoint

    cfg = load_config(None, SMALL)
    system = build_registration_system(cfg)
    with torch.no_grad():
        system.net.head.bias.copy_(torch.tensor([0.7, 0.2]))
    path = os.path.join(tmp_path, "last.pt")
    save_checkpoint({"config": config_to_dict(cfg), "models": {k: m.state_dict() for k, m in system.trainable_models().items()},
                     "optimizer": {}, "scheduler": {}, "scaler": None, "step": 1, "epoch": 0, "version": "0.1.0",
                     "rng": {}, "best_metric": None}, path)
    loaded = load_registration_checkpoint(path)
    b = _batch()
    assert torch.allclose(loaded.register(b.fixed, b.moving).flow, system.eval().register(b.fixed, b.moving).flow)
