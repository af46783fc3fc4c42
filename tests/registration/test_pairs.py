"""Synthetic multimodal pairs, pair folders, landmark files, video pairs."""
import os

import numpy as np
import pytest
import torch

from fmdepth.data.pairs import (MODALITIES, PairFolderDataset, check_video_pair, collate_pairs, load_image,
                                make_pair, read_landmarks, write_landmarks, write_pair_folder)
from fmdepth.geometry import flow_warp
from fmdepth.metrics.registration import sample_flow_at


@pytest.mark.parametrize("modality", MODALITIES)
def test_make_pair_shapes_and_ranges(modality):
    p = make_pair((48, 64), modality=modality, image="astronaut", affine=True, rms=2.0, seed=1, num_landmarks=10)
    assert p.fixed.shape == (1, 48, 64) and p.moving.shape == (1, 48, 64) and p.flow.shape == (2, 48, 64)
    assert 0 <= p.fixed.min() and p.fixed.max() <= 1 and p.fixed.std() > 0.02 and p.moving.std() > 0.02
    assert p.landmarks_fixed.shape == p.landmarks_moving.shape and len(p.landmarks_fixed) >= 5


def test_true_flow_reproduces_fixed_and_landmarks():
    p = make_pair((64, 64), modality="same", image="camera", affine=True, rms=3.0, seed=4)
    warped, valid = flow_warp(torch.from_numpy(p.moving)[None], torch.from_numpy(p.flow)[None])
    inner = valid[0, 0].clone()
    inner[:6], inner[-6:], inner[:, :6], inner[:, -6:] = False, False, False, False
    err = (warped[0, 0] - torch.from_numpy(p.fixed[0])).abs()[inner]
    assert err.mean() < 0.02  # bilinear vs cubic resampling only
    np.testing.assert_allclose(p.landmarks_fixed + sample_flow_at(p.flow, p.landmarks_fixed),
                               p.landmarks_moving, atol=1e-3)


def test_smooth_flow_rms():
    p = make_pair((96, 96), rms=5.0, seed=0)
    assert np.sqrt((p.flow ** 2).sum(0).mean()) == pytest.approx(5.0, rel=1e-4)


def test_landmark_file_errors(tmp_path):
    good = tmp_path / "a.csv"
    write_landmarks(str(good), np.array([[1.0, 2.0], [3.5, 4.0]]))
    np.testing.assert_allclose(read_landmarks(str(good), 10, 10), [[1.0, 2.0], [3.5, 4.0]])
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n3,4,5\n")
    with pytest.raises(ValueError, match=r"bad.csv:3"):
        read_landmarks(str(bad))
    with pytest.raises(ValueError, match="outside the 4x4 image"):
        read_landmarks(str(good), 4, 4)
    empty = tmp_path / "empty.csv"
    empty.write_text("x,y\n")
    with pytest.raises(ValueError, match="no landmarks"):
        read_landmarks(str(empty))
    with pytest.raises(FileNotFoundError):
        read_landmarks(str(tmp_path / "missing.csv"))


def test_non_image_file(tmp_path):
    f = tmp_path / "notes.png"
    f.write_text("this is not an image")
    with pytest.raises(ValueError, match="not a readable image"):
        load_image(str(f))


def test_pair_folder_dataset_and_count_mismatch(tmp_path):
    pairs = [make_pair((40, 40), seed=i, name=f"p{i}", num_landmarks=6) for i in range(2)]
    root = write_pair_folder(str(tmp_path / "pairs"), pairs)
    ds = PairFolderDataset(root, height=32, width=32)
    batch = collate_pairs([ds[0], ds[1]])
    assert batch.fixed.shape == (2, 1, 32, 32) and batch.flow.shape == (2, 2, 32, 32)
    assert len(batch.landmarks_fixed) == 2
    write_landmarks(os.path.join(root, "landmarks_moving", "p1.csv"), pairs[1].landmarks_moving[:3])
    with pytest.raises(ValueError, match="3 moving landmarks"):
        PairFolderDataset(root)[1]


def test_video_pair_mismatch(tmp_path):
    import imageio.v2 as iio2

    def write(path, n, fps):
        w = iio2.get_writer(str(path), format="ffmpeg", fps=fps, macro_block_size=1)
        for i in range(n):
            w.append_data(np.full((16, 16, 3), 20 * i, np.uint8))
        w.close()

    write(tmp_path / "a.mp4", 4, 10)
    write(tmp_path / "b.mp4", 3, 10)
    write(tmp_path / "c.mp4", 4, 5)
    with pytest.raises(ValueError, match="different lengths"):
        check_video_pair(str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"))
    n, _, notes = check_video_pair(str(tmp_path / "a.mp4"), str(tmp_path / "b.mp4"), on_mismatch="truncate")
    assert n == 3 and notes
    with pytest.raises(ValueError, match="frame rates differ"):
        check_video_pair(str(tmp_path / "a.mp4"), str(tmp_path / "c.mp4"))


def test_fast_synthetic_pairs_known_flow_and_determinism():
    from fmdepth.data.pairs import FastSyntheticPairDataset
    from fmdepth.geometry import flow_warp

    ds = FastSyntheticPairDataset(8, size=(64, 80), seed=3, modalities=("same",), rms=3.0, images=("camera",))
    a, b = ds[2], ds[2]
    assert a["fixed"].shape == (1, 64, 80) and a["moving"].shape == (1, 64, 80) and a["flow"].shape == (2, 64, 80)
    assert torch.equal(a["fixed"], b["fixed"]) and torch.equal(a["flow"], b["flow"])  # deterministic per index
    assert not torch.equal(ds[3]["flow"], a["flow"])
    rms = float(a["flow"].pow(2).sum(0).mean().sqrt())
    assert 1.5 - 1e-4 <= rms <= 4.5 + 1e-4  # rms * rms_range
    warped, valid = flow_warp(a["moving"][None], a["flow"][None])
    residual = float(((warped - a["fixed"][None]).abs() * valid).sum() / valid.sum())
    before = float((a["moving"] - a["fixed"]).abs().mean())
    assert residual < 0.25 * before, (residual, before)  # the true flow explains the fixed image
    # a wrong-sign flow does not
    wrong, v2 = flow_warp(a["moving"][None], -a["flow"][None])
    assert float(((wrong - a["fixed"][None]).abs() * v2).sum() / v2.sum()) > 2 * residual


@pytest.mark.parametrize("modality", ["remap", "edges", "invert"])
def test_fast_synthetic_pairs_modalities_in_range(modality):
    from fmdepth.data.pairs import FastSyntheticPairDataset

    s = FastSyntheticPairDataset(2, size=(48, 48), modalities=(modality,), images=("astronaut",))[1]
    for k in ("fixed", "moving"):
        assert s[k].dtype == torch.float32 and 0.0 <= float(s[k].min()) and float(s[k].max()) <= 1.0
    assert float((s["moving"] - s["fixed"]).abs().mean()) > 0.02  # a different modality


def test_fast_synthetic_pairs_errors():
    from fmdepth.data.pairs import FastSyntheticPairDataset

    with pytest.raises(ValueError, match="ihc"):
        FastSyntheticPairDataset(2, modalities=("ihc",))
    with pytest.raises(IndexError):
        FastSyntheticPairDataset(2, size=(32, 32), images=("camera",))[2]


def test_every_shipped_image_loads():
    from fmdepth.data.pairs import SHIPPED_IMAGES, shipped_image

    for name in SHIPPED_IMAGES:
        img = shipped_image(name)
        assert img.dtype == np.float32 and img.ndim == 3 and img.shape[0] in (1, 3), name
        assert min(img.shape[1:]) >= 128 and 0.0 <= img.min() and img.max() <= 1.0, name
    with pytest.raises(ValueError, match="unknown base image 'nope'"):
        shipped_image("nope")


def test_stereo_rgbd_and_paired_pairs():
    from fmdepth.data.pairs import stereo_rgbd

    base = stereo_rgbd()
    assert base.shape == (4, 500, 741) and np.isfinite(base).all()
    assert 0 <= base.min() and base.max() <= 1 and base[3].std() > 0.1
    p = make_pair((64, 64), modality="paired", image=base, affine=True, rms=2.0, seed=3, num_landmarks=10)
    assert p.fixed.shape == (1, 64, 64) and p.moving.shape == (1, 64, 64) and p.name == "array_paired_3"
    with pytest.raises(ValueError, match="array"):
        make_pair((64, 64), modality="paired", image=np.zeros((2, 8, 8), np.float32))
    with pytest.raises(ValueError, match=">= 2 channels"):
        make_pair((32, 32), modality="paired", image=np.random.rand(1, 64, 64).astype(np.float32))


def test_mni152_slice():
    pytest.importorskip("nilearn")
    from fmdepth.data.pairs import mni152_slice

    s = mni152_slice(90, "gm")
    assert s.shape[0] == 2 and s.dtype == np.float32 and 0 <= s.min() and s.max() <= 1
    assert s[1].max() > 0.5 and s[0].std() > 0.1  # a slice through the brain
    with pytest.raises(ValueError, match="tissue"):
        mni152_slice(90, "csf")
    with pytest.raises(ValueError, match="z"):
        mni152_slice(500)


def test_one_warp_generator_for_numpy_and_torch_streams():
    from fmdepth.data.warps import centred_affine, random_smooth_flow

    for rng in (np.random.default_rng(3), torch.Generator().manual_seed(3)):
        f = random_smooth_flow(40, 52, 2.5, rng)
        assert f.shape == (2, 40, 52) and f.dtype == torch.float32
        assert float(f.pow(2).sum(0).mean().sqrt()) == pytest.approx(2.5, rel=1e-5)
        assert float(f.mean(dim=(1, 2)).abs().max()) < 1e-5
    assert torch.equal(random_smooth_flow(8, 8, 0.0, np.random.default_rng(0)), torch.zeros(2, 8, 8))
    A = centred_affine(11, 21, 90.0)  # rotation about the centre (10, 5) keeps it fixed
    np.testing.assert_allclose(A @ np.array([10.0, 5.0, 1.0]), [10.0, 5.0], atol=1e-12)


def test_modality_registry_names_every_recipe():
    from fmdepth.data.modalities import modality_images

    base = torch.rand(3, 20, 24)
    for m in MODALITIES:
        a, b = modality_images(torch.cat([base, base[:1]]) if m == "paired" else base, m, np.random.default_rng(0))
        assert a.shape == b.shape == (1, 20, 24), m
    with pytest.raises(ValueError, match="unknown modality 'nope'"):
        modality_images(base, "nope", np.random.default_rng(0))


def test_random_warp_augment_composes_the_true_flow_and_drops_landmarks():
    import numpy as np
    import torch

    from fmdepth.data.warps import RandomWarpAugment, random_smooth_flow
    from fmdepth.geometry import flow_warp

    yy, xx = np.mgrid[0:48, 0:56] / 9.0
    moving = (0.5 + 0.4 * np.sin(xx) * np.cos(yy))[None].astype(np.float32)
    u = random_smooth_flow(48, 56, 2.0, np.random.default_rng(0))
    fixed = flow_warp(torch.from_numpy(moving)[None], u[None], padding_mode="border")[0][0].numpy()

    class One(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"fixed": fixed, "moving": moving, "flow": u.numpy(), "landmarks_fixed": np.zeros((2, 2)),
                    "landmarks_moving": np.zeros((2, 2)), "name": "a"}

    aug = RandomWarpAugment(One(), rms=2.0)
    torch.manual_seed(3)
    s = aug[0]
    assert s["landmarks_fixed"] is None and s["landmarks_moving"] is None and s["name"] == "a"
    assert np.abs(s["fixed"] - fixed).mean() > 0.02  # the fixed image moved
    inner = (slice(None), slice(6, -6), slice(6, -6))
    w = flow_warp(torch.from_numpy(moving)[None], torch.from_numpy(s["flow"])[None], padding_mode="border")[0][0]
    assert np.abs(w.numpy() - s["fixed"])[inner].mean() < 0.01  # the composed flow still registers the pair
    torch.manual_seed(3)
    assert np.array_equal(aug[0]["fixed"], s["fixed"])  # the engine's seeded stream repeats it
    assert not np.array_equal(aug[0]["fixed"], s["fixed"])  # and the next access draws a new warp
    with pytest.raises(ValueError, match="rms"):
        RandomWarpAugment(One(), rms=-1.0)


def test_augment_rms_wraps_pair_folders_only(tmp_path):
    from fmdepth.config import ConfigError, load_config
    from fmdepth.data.pairs import make_pair_folder
    from fmdepth.data.warps import RandomWarpAugment
    from fmdepth.tasks.registration import build

    root = make_pair_folder(str(tmp_path / "pairs"), 3, size=(32, 32))
    base = ["task=registration", "data.dataset=registration_pairs", "data.height=32", "data.width=32",
            "registration.unet_depth=2", "registration.unet_width=4", "registration.val_pairs=1"]
    task = build(load_config(None, base + [f"data.path={root}", "registration.augment_rms=1.5"]))
    assert isinstance(task.train_set, RandomWarpAugment) and len(task.train_set) == 2
    assert not isinstance(task.val_set, RandomWarpAugment)  # validation keeps its landmarks
    assert not isinstance(build(load_config(None, base + [f"data.path={root}"])).train_set, RandomWarpAugment)
    synth = build(load_config(None, base + ["registration.augment_rms=1.5", "registration.synthetic_pairs=2"]))
    assert not isinstance(synth.train_set, RandomWarpAugment)  # synthetic pairs are fresh already
    with pytest.raises(ConfigError, match="registration.augment_rms"):
        load_config(None, base + ["registration.augment_rms=-1"])


@pytest.mark.parametrize("hflip,vflip,transpose", [(True, False, False), (False, True, False), (False, False, True),
                                                    (True, True, True)])
def test_dihedral_pair_keeps_the_true_flow_and_landmarks(hflip, vflip, transpose):
    from fmdepth.data.pairs import make_pair
    from fmdepth.data.warps import dihedral_pair
    from fmdepth.geometry import flow_warp

    p = make_pair((40, 40), modality="edges", affine=True, rms=2.0, seed=3, num_landmarks=12)
    s = {"fixed": p.fixed, "moving": p.moving, "flow": p.flow, "landmarks_fixed": p.landmarks_fixed,
         "landmarks_moving": p.landmarks_moving}
    out = dihedral_pair(s, hflip, vflip, transpose)
    # warping commutes with the map: g(warp(moving, u)) == warp(g(moving), u')
    warped = flow_warp(torch.from_numpy(p.moving)[None], torch.from_numpy(p.flow)[None])[0][0].numpy()
    ref = dihedral_pair({"fixed": warped, "moving": warped}, hflip, vflip, transpose)["fixed"]
    got = flow_warp(torch.from_numpy(out["moving"])[None], torch.from_numpy(out["flow"])[None])[0][0].numpy()
    np.testing.assert_allclose(got, ref, atol=1e-4)
    # landmarks: moving = fixed + u'(fixed) still holds (sampled at the landmark, bilinear)
    from fmdepth.metrics.registration import landmark_errors

    assert landmark_errors(p.landmarks_fixed, p.landmarks_moving, p.flow).max() < 0.05
    assert landmark_errors(out["landmarks_fixed"], out["landmarks_moving"], out["flow"]).max() < 0.05
    assert not np.array_equal(out["fixed"], p.fixed) and out["fixed"].shape == p.fixed.shape


def test_dihedral_pair_transpose_needs_square_and_flip_augment_is_seeded(tmp_path):
    from fmdepth.config import load_config
    from fmdepth.data.pairs import make_pair_folder
    from fmdepth.data.warps import RandomFlipAugment, dihedral_pair
    from fmdepth.tasks.registration import build

    with pytest.raises(ValueError, match="square"):
        dihedral_pair({"fixed": np.zeros((1, 4, 6)), "moving": np.zeros((1, 4, 6))}, False, False, True)
    root = make_pair_folder(str(tmp_path / "pairs"), 3, size=(32, 32))
    base = ["task=registration", "data.dataset=registration_pairs", "data.height=32", "data.width=32",
            "registration.unet_depth=2", "registration.unet_width=4", "registration.val_pairs=1",
            f"data.path={root}"]
    task = build(load_config(None, base + ["registration.augment_flip=true"]))
    assert isinstance(task.train_set, RandomFlipAugment) and len(task.train_set) == 2
    assert not isinstance(task.val_set, RandomFlipAugment)
    assert not isinstance(build(load_config(None, base)).train_set, RandomFlipAugment)
    plain = task.train_set.dataset[0]["fixed"]
    torch.manual_seed(0)
    draws = [task.train_set[0]["fixed"].tobytes() for _ in range(64)]
    assert len(set(draws)) == 8 and plain.tobytes() in draws  # all 8 orientations, the original among them
    torch.manual_seed(0)
    assert [task.train_set[0]["fixed"].tobytes() for _ in range(64)] == draws  # the seeded stream repeats them
