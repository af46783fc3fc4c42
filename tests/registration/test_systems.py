"""Learned registration systems: one training step, NeMAR's two paths, checkpoint round trip."""
import os

import pytest
import torch

from fmdepth.config import load_config
from fmdepth.data.pairs import SyntheticPairDataset, collate_pairs
from fmdepth.models.registration import TranslationRegistration, build_registration_system
from fmdepth.tasks.registration import load_registration_checkpoint

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

    from fmdepth.tasks.registration import build

    task = build(load_config(None, SMALL))
    loader = DataLoader(task.val_set, batch_size=2, collate_fn=task.collate_fn)
    task.system.eval()
    with torch.no_grad():
        metrics = task.validate(task.system, loader, torch.device("cpu"))
    assert task.best_metric == "lre_mean" and task.best_metric in metrics
    assert metrics["lre_mean"] == pytest.approx(metrics["lre_mean_before"])  # identity at init


def test_checkpoint_round_trip(tmp_path):
    from fmdepth.config import config_to_dict
    from fmdepth.core.checkpoint import save_checkpoint

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


def test_similarity_weight_zero_trains_on_epe_alone():
    from fmdepth.models.registration import DeformableRegistration

    b = _batch()
    sys_ = DeformableRegistration(depth=3, width=8, similarity="ngf", smoothness=0.0, supervised=1.0,
                                  similarity_weight=0.0)
    with torch.no_grad():
        sys_.net.head.bias.copy_(torch.tensor([0.5, -0.25]))
    out = sys_.training_step(b, step=0)
    assert "similarity" not in out.scalars
    assert float(out.loss.detach()) == pytest.approx(out.scalars["supervised_epe"], rel=1e-6)
    # without a true flow the similarity comes back (weight 1), so the loss keeps a data term
    b.flow = None
    out = sys_.training_step(b, step=0)
    assert "similarity" in out.scalars and float(out.loss.detach()) == pytest.approx(out.scalars["similarity"], rel=1e-6)
    # a non-zero weight is kept as given on batches without a true flow
    sys_.similarity_weight = 0.25
    out = sys_.training_step(b, step=0)
    assert float(out.loss.detach()) == pytest.approx(0.25 * out.scalars["similarity"], rel=1e-6)
    with pytest.raises(ValueError, match="similarity_weight"):
        DeformableRegistration(similarity_weight=-1.0)


def test_torch_synthetic_generator_config_and_task():
    from fmdepth.config import ConfigError
    from fmdepth.data.pairs import FastSyntheticPairDataset
    from fmdepth.tasks import check_choices
    from fmdepth.tasks.registration import build

    cfg = load_config(None, SMALL + ["registration.synthetic_generator=torch", "registration.similarity_weight=0",
                                     "registration.supervised=1", "registration.modalities=[remap, same]"])
    task = build(cfg)
    assert isinstance(task.train_set, FastSyntheticPairDataset) and len(task.train_set) == 4
    assert task.system.similarity_weight == 0.0
    s = task.train_set[0]
    assert s["fixed"].shape == (1, 64, 64) and s["flow"].shape == (2, 64, 64)
    with pytest.raises(ConfigError, match="registration.synthetic_generator"):
        load_config(None, SMALL + ["registration.synthetic_generator=numpy"])
    with pytest.raises(ConfigError, match="registration.modalities"):  # checked by the task, against the registry
        check_choices(load_config(None, SMALL + ["registration.synthetic_generator=torch", "registration.modalities=[ihc]"]))
    with pytest.raises(ConfigError, match="registration.similarity_weight"):
        load_config(None, SMALL + ["registration.similarity_weight=-0.5"])
    with pytest.raises(ConfigError, match="registration.input_features"):
        load_config(None, SMALL + ["registration.input_features=gradients"])


def test_orientation_features_hand_values_and_sign_invariance():
    from fmdepth.models.registration import DeformableRegistration, orientation_features

    u = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 6, 8)
    f = orientation_features(0.1 * u)  # horizontal ramp: gx = 0.1, gy = 0 (interior)
    assert f.shape == (1, 2, 6, 8)
    assert torch.allclose(f[0, 0, :, 1:-1], torch.full((6, 6), 0.01 / (0.01 + 0.0025)))
    assert torch.allclose(f[0, 1], torch.zeros(6, 8))
    v = u.transpose(-1, -2)[..., :6, :6] * 0.1  # vertical ramp: cos 2a = -1 direction
    assert float(orientation_features(v)[0, 0, 2, 2]) < -0.7
    x = torch.rand(2, 1, 16, 16)
    assert torch.allclose(orientation_features(x), orientation_features(1.0 - x), atol=1e-6)  # polarity-free
    with pytest.raises(ValueError, match="input_features"):
        DeformableRegistration(input_features="rgb")


def test_shipped_deformable_config_uses_the_fast_supervised_recipe():
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    cfg = load_config(os.path.join(root, "configs", "registration_deformable.yaml"), [])
    r = cfg.registration
    assert r.synthetic_generator == "torch" and r.supervised > 0 and r.similarity_weight == 0.0
    assert r.input_features == "orientation" and r.input_norm
    system = build_registration_system(cfg)
    assert system.net.in_channels == 6 and system.input_features == "orientation"


def test_bench_learned_model_save_load_round_trip(tmp_path):
    import importlib.util

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    spec = importlib.util.spec_from_file_location("bench_registration", os.path.join(root, "bench", "registration.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model = bench.build_learned((128, 128)).eval()
    with torch.no_grad():
        model.net.head.bias.copy_(torch.tensor([0.3, -0.6]))
    path = os.path.join(tmp_path, "learned.pt")
    bench.save_learned(model, path)
    loaded = bench.load_learned(path, (128, 128))
    f, m = torch.rand(1, 1, 128, 128), torch.rand(1, 1, 128, 128)
    assert torch.equal(loaded.register(f, m).flow, model.register(f, m).flow)
    assert loaded.input_scale == bench.LEARNED["net_size"] / 128
    ckpt = torch.load(path, weights_only=True)
    ckpt["learned"]["width"] += 1
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="saved for"):
        bench.load_learned(path, (128, 128))


def test_input_norm_makes_the_prediction_brightness_invariant():
    from fmdepth.models.registration import DeformableRegistration

    torch.manual_seed(0)
    b = _batch()
    for norm in (True, False):
        sys_ = DeformableRegistration(depth=3, width=8, input_norm=norm).eval()
        torch.nn.init.normal_(sys_.net.head.weight, std=0.1)  # a non-trivial flow
        with torch.no_grad():
            a = sys_.predict_flow(b.fixed, b.moving).flow
            c = sys_.predict_flow(0.5 * b.fixed + 0.3, 2.0 * b.moving - 0.2).flow
        assert a.abs().max() > 1e-3
        assert torch.allclose(a, c, atol=1e-4) == norm


def test_cascade_composes_the_passes():
    from fmdepth.models.registration import DeformableRegistration

    b = _batch()
    sys_ = DeformableRegistration(depth=3, width=8, passes=2).eval()
    with torch.no_grad():
        sys_.net.head.bias.copy_(torch.tensor([1.25, -0.5]))  # every pass predicts the same translation
        flow = sys_.predict_flow(b.fixed, b.moving).flow
    assert torch.allclose(flow, torch.tensor([2.5, -1.0]).view(1, 2, 1, 1).expand_as(flow), atol=1e-5)
    out = sys_.train().training_step(b, step=0)
    out.loss.backward()
    assert sys_.net.head.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="passes"):
        DeformableRegistration(passes=0)


class _ScriptedFlowNet(torch.nn.Module):
    """Stands in for the U-Net: pass k returns the k-th scripted smooth field at the input size and
    records the (fixed, moving) inputs it was given."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(()))  # so that training_step has a gradient to check
        self.seen = []

    def field(self, k, h, w):
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        if k == 0:  # order-sensitive pair of fields: s + f(id + s) != f + s(id + f)
            return torch.stack([1.5 * torch.sin(ys / 4.0), 0.8 * torch.cos(xs / 5.0) + 0.3])[None]
        return torch.stack([0.6 * torch.cos(ys / 3.0 + xs / 7.0), -1.1 * torch.sin(xs / 3.0)])[None]

    def forward(self, f, m):
        self.seen.append((f.detach().clone(), m.detach().clone()))
        k = len(self.seen) - 1
        return self.w * self.field(k, *f.shape[-2:]).expand(f.shape[0], -1, -1, -1)


def _np_warp(img, flow):
    """Independent reference of out(p) = img(p + flow(p)): bilinear, border-clamped (scipy)."""
    import numpy as np
    from scipy import ndimage

    h, w = img.shape[-2:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    coords = [ys + flow[1].numpy(), xs + flow[0].numpy()]
    return np.stack([ndimage.map_coordinates(c.numpy().astype(np.float64), coords, order=1, mode="nearest")
                     for c in img])


@pytest.mark.parametrize("refine_scale", [1.0, 2.0])
def test_cascade_composition_order_and_refine_scale(refine_scale):
    """Pass 2 sees the moving image warped by pass 1's flow, at input_scale * refine_scale, and the
    result is u = s + f(id + s) (s: pass-2 residual, f: pass-1 flow, resampled to pass 2's grid)."""
    import numpy as np

    from fmdepth.geometry import resize_flow, resize_image
    from fmdepth.models.registration import DeformableRegistration

    g = torch.Generator().manual_seed(0)
    fixed, moving = torch.rand(1, 1, 32, 32, generator=g), torch.rand(1, 1, 32, 32, generator=g)
    sys_ = DeformableRegistration(passes=2, input_scale=0.5, refine_scale=refine_scale).eval()
    sys_.net = net = _ScriptedFlowNet()
    assert sys_.pass_sizes(32, 32) == [(16, 16), (32, 32) if refine_scale == 2 else (16, 16)]
    with torch.no_grad():
        out = sys_.predict_flow(fixed, moving)
    n2 = 32 if refine_scale == 2 else 16
    assert [tuple(f.shape[-2:]) for f, _ in net.seen] == [(16, 16), (n2, n2)]
    f1 = resize_flow(net.field(0, 16, 16), (n2, n2))[0]
    m2 = resize_image(moving, (n2, n2))[0]
    np.testing.assert_allclose(net.seen[1][1][0].numpy(), _np_warp(m2, f1), atol=1e-4)
    s = net.field(1, n2, n2)[0]
    expected = s.numpy() + _np_warp(f1, s)
    np.testing.assert_allclose(out.flow_lo[0].numpy(), expected, atol=1e-4)
    wrong = f1.numpy() + _np_warp(s, f1)  # the other composition order is measurably different
    assert np.abs(wrong - expected).max() > 0.05
    assert out.flow.shape == (1, 2, 32, 32)
    # trained end to end: the loss on the final flow reaches the net through both passes
    sys_.supervised, sys_.similarity_weight = 1.0, 0.0
    batch = collate_pairs([{"name": "a", "fixed": fixed[0], "moving": moving[0], "flow": torch.zeros(2, 32, 32)}])
    sys_.train().training_step(batch, step=0).loss.backward()
    assert net.w.grad is not None and net.w.grad.abs() > 0
    with pytest.raises(ValueError, match="refine_scale"):
        DeformableRegistration(refine_scale=0.5)


def test_cascade_from_step_trains_the_first_pass_alone_first():
    cfg = load_config(None, SMALL + ["registration.method=deformable", "registration.passes=2",
                                     "registration.refine_scale=2", "registration.input_scale=0.5",
                                     "registration.cascade_from_step=3", "registration.supervised=1",
                                     "registration.similarity_weight=0"])
    system = build_registration_system(cfg).train()
    assert (system.passes, system.refine_scale, system.cascade_from_step) == (2, 2.0, 3)
    system.net = net = _ScriptedFlowNet()
    b = _batch()
    system.training_step(b, step=2)
    assert [tuple(f.shape[-2:]) for f, _ in net.seen] == [(32, 32)]  # one pass before step 3
    net.seen.clear()
    system.training_step(b, step=3)
    assert [tuple(f.shape[-2:]) for f, _ in net.seen] == [(32, 32), (64, 64)]
    net.seen.clear()
    system.eval().predict_flow(b.fixed, b.moving)  # inference always runs all passes
    assert len(net.seen) == 2
    with pytest.raises(ValueError, match="cascade_from_step"):
        load_config(None, SMALL + ["registration.cascade_from_step=-1"])


def test_local_translator_keeps_geometry_and_absolute_intensity():
    from fmdepth.networks.registration import LocalTranslator

    t = LocalTranslator(1, 1, width=8, num_layers=2)
    x = torch.rand(1, 1, 24, 24)
    y = t(x)
    assert y.shape == x.shape and float(y.detach().min()) >= 0 and float(y.detach().max()) <= 1
    x2 = x.clone()
    x2[0, 0, 12, 12] += 0.5  # one pixel changes: only its 5x5 neighbourhood may respond
    d = (t(x2) - y).detach().abs()[0, 0]
    assert float(d[10:15, 10:15].max()) > 0
    d[10:15, 10:15] = 0
    assert float(d.max()) == 0.0
    # no per-image normalisation: the same pixel value gives the same output whatever the rest of the image
    a, b = torch.full((1, 1, 16, 16), 0.3), torch.full((1, 1, 16, 16), 0.3)
    b[..., :, 8:] = 0.9
    assert torch.allclose(t(a)[..., 4, 2], t(b)[..., 4, 2])


def test_nemar_l1_counts_content_moved_out_of_view():
    """R must not lower the L1 by moving content out of the moving image (NeMAR: zeros, no mask)."""
    from torch import nn

    b = _batch()
    b.moving = b.fixed.clone()  # same modality, aligned: the identity flow is perfect
    system = TranslationRegistration(depth=2, width=4, discriminator_width=4, translator="local",
                                     translator_width=4, bilateral_weight=0.0)
    system.translator = nn.Identity()
    assert system.training_step(b, step=0).scalars["l1_both_paths"] == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        system.net.head.bias.copy_(torch.tensor([1000.0, 0.0]))  # everything sampled from outside
    l1 = system.training_step(b, step=0).scalars["l1_both_paths"]
    assert l1 == pytest.approx(2 * float(b.fixed.mean()), rel=1e-4)


def test_shipped_translation_config_builds_the_measured_recipe():
    from fmdepth.config import ConfigError
    from fmdepth.networks.registration import LocalTranslator
    from fmdepth.tasks import check_choices

    root = os.path.join(os.path.dirname(__file__), "..", "..")
    cfg = load_config(os.path.join(root, "configs", "registration_translation.yaml"), [])
    system = build_registration_system(cfg)
    assert isinstance(system.translator, LocalTranslator)
    assert system.net.in_channels == 6 and system.input_features == "orientation" and system.input_norm
    out = system.training_step(_batch(), step=0)
    out.loss.backward()
    for name, module in system.trainable_models().items():
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()), name
    resnet = build_registration_system(load_config(None, SMALL + ["registration.method=translation"]))
    assert resnet.translator_kind == "resnet" and resnet.net.in_channels == 2
    with pytest.raises(ConfigError, match="registration.translator"):
        check_choices(load_config(None, SMALL + ["registration.method=translation", "registration.translator=unet"]))
    with pytest.raises(ValueError, match="translator"):
        TranslationRegistration(translator="unet")


@pytest.mark.parametrize("size", [(16, 16), (12, 16)])
def test_flip_average_maps_each_orientation_back(size):
    """An oracle that returns the true flow of whichever orientation it is shown: the average of
    the 8 (4 if not square) orientations mapped back must be the true flow exactly."""
    from fmdepth.geometry import DIHEDRAL, dihedral_flow, dihedral_image
    from fmdepth.models.registration import FlowPrediction, LearnedRegistration

    g = torch.Generator().manual_seed(1)
    fixed, moving = torch.rand(1, 1, *size, generator=g), torch.rand(1, 1, *size, generator=g)
    truth = torch.randn(1, 2, *size, generator=g)
    shown = []

    class Oracle(LearnedRegistration):
        def predict_flow(self, f, m):
            for o in DIHEDRAL:
                if dihedral_image(fixed, *o).shape == f.shape and torch.equal(dihedral_image(fixed, *o), f):
                    shown.append(o)
                    return FlowPrediction(flow=dihedral_flow(truth, *o))
            raise AssertionError("not an orientation of the pair")

    oracle = Oracle(similarity="mse")
    torch.testing.assert_close(oracle.register(fixed, moving).flow, truth)
    res = oracle.register(fixed, moving, flip_average=True)
    torch.testing.assert_close(res.flow, truth, atol=1e-6, rtol=0)
    assert len(set(shown[1:])) == (8 if size[0] == size[1] else 4) and res.affine is None
