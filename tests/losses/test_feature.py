import pytest
import torch
import torch.nn.functional as F

from fmdepth.losses import (FeatureMetricLoss, FeatureNetLoss, convergent_loss, discriminative_loss,
                            feature_metric_loss, featurenet_loss, photometric_error, reconstruction_loss)

FX = 4.0


def _camera(b, h, w, dtype=torch.float64, device="cpu"):
    K = torch.tensor([[FX, 0.0, (w - 1) / 2], [0.0, FX, (h - 1) / 2], [0.0, 0.0, 1.0]], dtype=dtype, device=device)
    return K.expand(b, 3, 3).clone()


def _translation_x(b, tx, dtype=torch.float64, device="cpu"):
    T = torch.eye(4, dtype=dtype, device=device).repeat(b, 1, 1)
    T[:, 0, 3] = tx
    return T


def _setup(b=2, c=3, h=5, w=7, z=2.0, dtype=torch.float64, device="cpu"):
    src = torch.rand(b, c, h, w, dtype=dtype, device=device)
    depth = torch.full((b, 1, h, w), z, dtype=dtype, device=device)
    return src, depth, _camera(b, h, w, dtype, device)


def test_identity_pose_identical_features_is_zero(device, dtype):
    feat, depth, K = _setup(dtype=dtype, device=device)
    I = _translation_x(2, 0.0, dtype, device)
    loss = feature_metric_loss(feat, [feat, feat], depth, [I, I], K)
    assert abs(loss.item()) < (1e-12 if dtype == torch.float64 else 1e-6)


def test_known_one_pixel_shift():
    src, depth, K = _setup()
    # target(u) = source(u + 1): a translation t_x = Z / fx moves every target pixel by +1 px in the source
    tgt = torch.zeros_like(src)
    tgt[..., :-1] = src[..., 1:]
    tgt[..., -1] = src[..., -1]
    T = _translation_x(2, 2.0 / FX)
    I = _translation_x(2, 0.0)
    assert feature_metric_loss(tgt, [src], depth, [T], K).item() == pytest.approx(0.0, abs=1e-9)
    wrong = feature_metric_loss(tgt, [src], depth, [I], K).item()
    expected = ((tgt - src) ** 2 + 1e-6).sqrt().mean(1) - 1e-3  # every pixel valid under identity
    assert wrong == pytest.approx(expected.mean().item())
    assert wrong > 0.05
    # two sources: per-pixel minimum; the shifted one is right except in the last column, which it
    # cannot see, so there only the identity source counts
    both = feature_metric_loss(tgt, [src, src], depth, [T, I], K).item()
    assert both == pytest.approx(expected[..., -1].sum().item() / expected.numel(), abs=1e-9)


def test_mask_and_all_invalid():
    src, depth, K = _setup()
    tgt = torch.rand_like(src)
    I = _translation_x(2, 0.0)
    per_pixel = ((tgt - src) ** 2 + 1e-6).sqrt().mean(1, keepdim=True) - 1e-3
    mask = torch.zeros_like(depth)
    mask[..., 2, 3] = 1.0
    assert feature_metric_loss(tgt, [src], depth, [I], K, mask=mask).item() == pytest.approx(
        per_pixel[..., 2, 3].mean().item())
    assert feature_metric_loss(tgt, [src], depth, [I], K, mask=mask.bool()).item() == pytest.approx(
        per_pixel[..., 2, 3].mean().item())
    zero = feature_metric_loss(tgt, [src], depth, [I], K, mask=torch.zeros_like(depth))
    assert zero.item() == 0.0
    bad_depth = torch.full_like(depth, -1.0).requires_grad_(True)  # behind the camera: nothing valid
    feat = tgt.clone().requires_grad_(True)
    loss = feature_metric_loss(feat, [src], bad_depth, [I], K)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(feat.grad).all() and torch.isfinite(bad_depth.grad).all()


def test_gradients_reach_depth_and_pose():
    src, _, K = _setup()
    tgt = torch.rand_like(src)
    depth = (torch.rand(2, 1, 5, 7, dtype=torch.float64) + 1.5).requires_grad_(True)
    T = _translation_x(2, 0.3).requires_grad_(True)
    loss = feature_metric_loss(tgt, [src], depth, [T], K)
    loss.backward()
    assert depth.grad.abs().sum() > 0 and T.grad.abs().sum() > 0
    assert torch.isfinite(depth.grad).all() and torch.isfinite(T.grad).all()
    small_src, small_depth, small_K = _setup(b=1, c=2, h=3, w=4, z=2.5)
    small_tgt = torch.rand_like(small_src)
    small_T = _translation_x(1, 0.3)
    assert torch.autograd.gradcheck(lambda d: feature_metric_loss(small_tgt, [small_src], d, [small_T], small_K),
                                    (small_depth.requires_grad_(True),))


def test_feature_metric_module_equals_function():
    src, depth, K = _setup()
    tgt = torch.rand_like(src)
    T = [_translation_x(2, 0.2), _translation_x(2, -0.1)]
    torch.testing.assert_close(FeatureMetricLoss()(tgt, [src, src], depth, T, K),
                               feature_metric_loss(tgt, [src, src], depth, T, K))


@pytest.mark.parametrize("kwargs, name", [
    (dict(feats_src=[]), "feats_src"),
    (dict(src_T_tgt=[]), "src_T_tgt"),
    (dict(K=torch.eye(3, dtype=torch.float64)), "K"),
    (dict(depth_tgt=torch.ones(2, 1, 4, 7, dtype=torch.float64)), "depth_tgt"),
    (dict(mask=torch.ones(2, 5, 7)), "mask"),
    (dict(feats_src=[torch.rand(2, 4, 5, 7, dtype=torch.float64)]), r"feats_src\[0\]"),
])
def test_feature_metric_bad_input(kwargs, name):
    src, depth, K = _setup()
    args = dict(feat_tgt=src, feats_src=[src], depth_tgt=depth, src_T_tgt=[_translation_x(2, 0.0)], K=K)
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{name}"):
        feature_metric_loss(**args)


# --- FeatureNet objective -------------------------------------------------------------------------

def _pyramid(image, n):
    return [F.interpolate(image, scale_factor=0.5 ** s, mode="area") if s else image for s in range(n)]


def test_reconstruction_loss_perfect_and_by_value():
    image = torch.rand(2, 3, 16, 24)
    recon = _pyramid(image, 3)
    assert reconstruction_loss(recon, image).item() == pytest.approx(0.0, abs=1e-7)
    noisy = [r + 0.1 for r in recon]
    expected = sum(photometric_error(n, r).mean() for n, r in zip(noisy, recon)) / 3
    torch.testing.assert_close(reconstruction_loss(noisy, image), expected)
    torch.testing.assert_close(reconstruction_loss(noisy, recon), expected)  # per-scale images


def test_discriminative_and_convergent_by_hand():
    # φ = u in all channels on a flat image: |∂x φ| = 1, |∂y φ| = 0 -> discriminative = -1
    u = torch.arange(6, dtype=torch.float64)
    phi = u.expand(1, 4, 5, 6)
    flat = torch.full((1, 3, 10, 12), 0.5, dtype=torch.float64)  # resized to (5, 6) inside
    assert discriminative_loss(phi, flat).item() == pytest.approx(-1.0)
    assert convergent_loss(phi, flat).item() == pytest.approx(0.0, abs=1e-12)
    assert convergent_loss((u ** 2).expand(1, 4, 5, 6), flat).item() == pytest.approx(2.0)
    # channel averaging: one channel with slope 4, three flat -> mean |∂x φ| = 1 over channels
    phi2 = torch.cat([4 * u.expand(1, 1, 5, 6), torch.zeros(1, 3, 5, 6, dtype=torch.float64)], 1)
    assert discriminative_loss(phi2, flat).item() == pytest.approx(-1.0)
    # image edges damp the reward: image ramp of 0.1 per feature pixel along x
    img = (0.1 * u).expand(1, 3, 5, 6)
    assert discriminative_loss(phi, img).item() == pytest.approx(-torch.exp(torch.tensor(-0.1)).item())


def test_featurenet_loss_combines_levels_with_weights():
    image = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    feats = [torch.rand(2, 8, 16, 16, dtype=torch.float64), torch.rand(2, 16, 8, 8, dtype=torch.float64),
             torch.rand(2, 32, 4, 4, dtype=torch.float64)]
    recons = [torch.rand(2, 3, 32, 32, dtype=torch.float64), torch.rand(2, 3, 16, 16, dtype=torch.float64)]
    w = {"reconstruction": 1.0, "discriminative": 0.1, "convergent": 0.2}
    total, parts = featurenet_loss(feats, recons, image, w)
    rec = reconstruction_loss(recons, image)
    dis = sum(discriminative_loss(f, image) / 2 ** l for l, f in enumerate(feats))
    cvt = sum(convergent_loss(f, image) / 2 ** l for l, f in enumerate(feats))
    torch.testing.assert_close(total, rec + 0.1 * dis + 0.2 * cvt)
    torch.testing.assert_close(parts["reconstruction"], rec)
    torch.testing.assert_close(parts["discriminative"], dis)
    torch.testing.assert_close(parts["convergent"], cvt)
    assert not parts["discriminative"].requires_grad
    total2, _ = featurenet_loss(feats, recons, image, (1.0, 0.1, 0.2))
    torch.testing.assert_close(total2, total)
    total3, _ = featurenet_loss(feats, recons, image, {"discriminative": 0.1, "convergent": 0.2})
    torch.testing.assert_close(total3, total)
    module_total, _ = FeatureNetLoss(w)(feats, recons, image)
    torch.testing.assert_close(module_total, total)
    with pytest.raises(ValueError, match="^weights"):
        featurenet_loss(feats, recons, image, {"smooth": 1.0})


def test_featurenet_loss_constant_features_finite_gradients():
    image = torch.full((1, 3, 16, 16), 0.5)
    feats = [torch.zeros(1, 4, 8, 8, requires_grad=True), torch.zeros(1, 4, 4, 4, requires_grad=True)]
    recons = [torch.full((1, 3, 16, 16), 0.5, requires_grad=True)]
    total, _ = featurenet_loss(feats, recons, image)
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(t.grad).all() for t in feats + recons)


@pytest.mark.parametrize("call, name", [
    (lambda: reconstruction_loss(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)), "recon"),
    (lambda: reconstruction_loss([torch.rand(1, 3, 8, 8)], torch.rand(2, 3, 8, 8)), "image"),
    (lambda: discriminative_loss(torch.rand(4, 8, 8), torch.rand(1, 3, 8, 8)), "feature"),
    (lambda: convergent_loss(torch.rand(1, 4, 2, 2), torch.rand(1, 3, 8, 8)), "feature"),
    (lambda: featurenet_loss([], [torch.rand(1, 3, 8, 8)], torch.rand(1, 3, 8, 8)), "features"),
])
def test_featurenet_bad_input(call, name):
    with pytest.raises(ValueError, match=rf"^{name}"):
        call()


def test_cuda_parity(cuda_device):
    src, depth, K = _setup(dtype=torch.float32)
    tgt = torch.rand_like(src)
    T = [_translation_x(2, 0.3, torch.float32)]
    cpu = feature_metric_loss(tgt, [src], depth, T, K)
    gpu = feature_metric_loss(tgt.to(cuda_device), [src.to(cuda_device)], depth.to(cuda_device),
                              [t.to(cuda_device) for t in T], K.to(cuda_device))
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-5)
    image = torch.rand(1, 3, 16, 16)
    feats = [torch.rand(1, 4, 8, 8)]
    recons = [torch.rand(1, 3, 16, 16)]
    torch.testing.assert_close(featurenet_loss([f.to(cuda_device) for f in feats], [r.to(cuda_device) for r in recons],
                                               image.to(cuda_device))[0].cpu(),
                               featurenet_loss(feats, recons, image)[0], rtol=1e-4, atol=1e-5)


def test_feature_metric_under_cpu_autocast():
    src, depth, K = _setup(dtype=torch.float32)
    tgt = torch.rand_like(src)
    T = [_translation_x(2, 0.3, torch.float32)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = feature_metric_loss(tgt.bfloat16(), [src.bfloat16()], depth, T, K)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    torch.testing.assert_close(loss, feature_metric_loss(tgt.bfloat16().float(), [src.bfloat16().float()], depth, T, K),
                               rtol=1e-2, atol=1e-2)
