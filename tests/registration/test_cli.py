"""`fmdepth register` and `fmdepth evaluate registration` end to end on small pairs."""
import json
import os

import numpy as np
import pytest

from fmdepth.cli import main
from fmdepth.data.pairs import make_pair, save_image, write_landmarks, write_pair_folder


@pytest.fixture
def pair_dir(tmp_path):
    p = make_pair((64, 64), modality="remap", image="camera", rms=2.5, seed=0, name="p0", num_landmarks=12)
    write_pair_folder(str(tmp_path / "pairs"), [p])
    return tmp_path / "pairs", p


def _args(root, out, *extra):
    return ["register", "--fixed", str(root / "fixed" / "p0.png"), "--moving", str(root / "moving" / "p0.png"),
            "--out", str(out), "--quiet", *extra]


def test_register_writes_all_outputs(pair_dir, tmp_path, capsys):
    root, p = pair_dir
    out = tmp_path / "out"
    rc = main(_args(root, out, "--method", "deformable", "--similarity", "ngf", "--iterations", "40,30",
                    "--landmarks-fixed", str(root / "landmarks_fixed" / "p0.csv"),
                    "--landmarks-moving", str(root / "landmarks_moving" / "p0.csv")))
    assert rc == 0
    for name in ("warped.png", "flow.npy", "overlay.png", "checkerboard.png", "result.json"):
        assert (out / name).is_file(), name
    flow = np.load(out / "flow.npy", allow_pickle=False)
    assert flow.shape == (2, 64, 64) and flow.dtype == np.float32
    text = capsys.readouterr().out
    assert "landmark error before" in text and "landmark error after" in text
    res = json.loads((out / "result.json").read_text())
    assert res["landmarks_after"]["lre_mean"] < res["landmarks_before"]["lre_mean"]
    assert res["kept"] == "final" and set(res["scores"]) == {"identity", "final"}
    assert set(res["scores"]["final"]) == {"ngf", "mind"} and res["selection"]
    assert "kept: final" in text
    assert set(res["consistency_px"]) == {"final"} and res["consistency_px"]["final"] < 0.03 * 64
    assert f"forward-backward error (registered the other way round): final {res['consistency_px']['final']:.2f} px " \
           f"(limit 1.92 px)" in text


def test_register_default_mind_init_affine_and_constant_image(pair_dir, tmp_path, capsys):
    root, p = pair_dir
    out = tmp_path / "aff"
    assert main(_args(root, out, "--init", "affine", "--levels", "2", "--iterations", "30,20")) == 0
    res = json.loads((out / "result.json").read_text())
    assert res["similarity"] == "mind" and res["init"] == "affine" and res["kept"] in ("identity", "affine", "final", "identity start")
    assert "affine" in res["scores"] or any("affine dropped" in n for n in res["selection"])
    # the MI test of --mind-mi-weight auto: measured, reported, and MI added only from 0.92
    eta = res["correlation_ratio"]
    assert 0.0 <= eta <= 1.0 and res["mind_mi_weight"] == (0.2 if eta >= 0.92 else 0.0)
    assert f"intensities: correlation ratio {eta:.3f} (functional from 0.92): " in capsys.readouterr().out
    assert main(_args(root, tmp_path / "mi", "--levels", "2", "--iterations", "10,10", "--mind-mi-weight", "0.3")) == 0
    res = json.loads((tmp_path / "mi" / "result.json").read_text())
    assert res["mind_mi_weight"] == 0.3 and res["correlation_ratio"] is None
    assert "intensities:" not in capsys.readouterr().out
    flat = tmp_path / "flat.png"
    save_image(str(flat), np.full((1, 64, 64), 0.5, np.float32))
    capsys.readouterr()
    assert main(["register", "--fixed", str(flat), "--moving", str(root / "moving" / "p0.png"),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "fixed image: is constant" in capsys.readouterr().err
    assert main(_args(root, tmp_path / "o", "--method", "translation")) == 2
    assert "withdrawn" in capsys.readouterr().err


def test_register_resamples_moving_of_other_size(pair_dir, tmp_path, capsys):
    root, p = pair_dir
    big = tmp_path / "big.png"
    rgb = np.repeat(np.kron(p.moving, np.ones((1, 2, 2))), 3, 0)  # 3 x 128 x 128, RGB
    save_image(str(big), rgb)
    out = tmp_path / "out2"
    rc = main(["register", "--fixed", str(root / "fixed" / "p0.png"), "--moving", str(big), "--out", str(out),
               "--method", "affine", "--similarity", "ngf", "--iterations", "5", "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "resampled" in text and "luminance" in text
    assert np.load(out / "flow.npy").shape == (2, 64, 64)


def test_register_bad_inputs(pair_dir, tmp_path, capsys):
    root, p = pair_dir
    lf = root / "landmarks_fixed" / "p0.csv"
    short = tmp_path / "short.csv"
    write_landmarks(str(short), p.landmarks_moving[:3])
    assert main(_args(root, tmp_path / "o", "--landmarks-fixed", str(lf), "--landmarks-moving", str(short))) == 2
    assert "landmark counts differ" in capsys.readouterr().err
    outside = tmp_path / "outside.csv"
    write_landmarks(str(outside), np.array([[70.0, 3.0]] * len(p.landmarks_fixed)))
    assert main(_args(root, tmp_path / "o", "--landmarks-fixed", str(lf), "--landmarks-moving", str(outside))) == 2
    assert "outside the 64x64 image" in capsys.readouterr().err
    junk = tmp_path / "junk.png"
    junk.write_text("not an image")
    assert main(["register", "--fixed", str(junk), "--moving", str(root / "moving" / "p0.png"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "not a readable image" in capsys.readouterr().err
    assert main(_args(root, tmp_path / "o", "--iterations", "ten")) == 2
    capsys.readouterr()
    assert main(_args(root, tmp_path / "o", "--mind-radius", "-1")) == 2
    assert "--mind-radius: must be >= 0" in capsys.readouterr().err
    assert main(_args(root, tmp_path / "o", "--mind-ngf-weight", "nan")) == 2
    assert "--mind-ngf-weight: must be >= 0" in capsys.readouterr().err
    assert main(_args(root, tmp_path / "o", "--consistency-limit", "-1")) == 2
    assert "--consistency-limit: must be >= 0" in capsys.readouterr().err
    assert main(_args(root, tmp_path / "o", "--mind-mi-weight", "sometimes")) == 2
    assert "--mind-mi-weight: expected 'auto' or a weight >= 0, got 'sometimes'" in capsys.readouterr().err


def test_register_frame_folders_writes_video(tmp_path):
    for side in ("a", "b"):
        os.makedirs(tmp_path / side)
    for i in range(3):
        q = make_pair((32, 32), modality="same", rms=1.0, seed=i, num_landmarks=4)
        save_image(str(tmp_path / "a" / f"{i:03d}.png"), q.fixed)
        save_image(str(tmp_path / "b" / f"{i:03d}.png"), q.moving)
    out = tmp_path / "vid"
    rc = main(["register", "--fixed-video", str(tmp_path / "a"), "--moving-video", str(tmp_path / "b"), "--out",
               str(out), "--method", "affine", "--similarity", "ncc", "--iterations", "3", "--levels", "1", "--quiet"])
    assert rc == 0
    assert sorted(os.listdir(out / "frames")) == ["000000.png", "000001.png", "000002.png"]
    assert (out / "overlay.mp4").stat().st_size > 0
    os.remove(tmp_path / "b" / "002.png")
    assert main(["register", "--fixed-video", str(tmp_path / "a"), "--moving-video", str(tmp_path / "b"),
                 "--out", str(out), "--quiet"]) == 2


def test_evaluate_registration_json(pair_dir, tmp_path):
    root, p = pair_dir
    flows = tmp_path / "flows"
    os.makedirs(flows)
    np.save(flows / "p0.npy", p.flow)  # the true flow scores ~0
    js = tmp_path / "reg.json"
    assert main(["evaluate", "registration", "--pairs", str(root), "--flows", str(flows), "--json", str(js)]) == 0
    summary = json.loads(js.read_text())["summary"]
    assert summary["lre_mean"] < 0.05 and summary["lre_mean_before"] > 1.0 and summary["folding_fraction"] == 0.0


def test_register_init_nbb_uses_best_buddy_affine(tmp_path, monkeypatch, capsys):
    """--init nbb fits an affine to best-buddy pairs (matches stubbed with the true affine here)."""
    from types import SimpleNamespace

    import fmdepth.correspondence as corr

    p = make_pair((64, 64), modality="remap", image="camera", affine=True, rms=0.0, seed=3, name="a")
    root = tmp_path / "pairs"
    write_pair_folder(str(root), [p])
    pts_a = np.array([[8.0, 8.0], [50.0, 10.0], [12.0, 52.0], [40.0, 40.0], [30.0, 20.0]])
    pts_b = pts_a @ p.affine[:, :2].T + p.affine[:, 2]

    def fake_nbb(image_a, image_b, k=10, **kw):
        assert image_a.shape[0] == 3 and image_b.shape[0] == 3
        return SimpleNamespace(points_a=pts_a, points_b=pts_b, scores=np.ones(len(pts_a)))

    monkeypatch.setattr(corr, "find_best_buddies", fake_nbb)
    out = tmp_path / "nbb"
    rc = main(["register", "--fixed", str(root / "fixed" / "a.png"), "--moving", str(root / "moving" / "a.png"),
               "--out", str(out), "--method", "affine", "--similarity", "ngf", "--init", "nbb", "--iterations", "0",
               "--landmarks-fixed", str(root / "landmarks_fixed" / "a.csv"),
               "--landmarks-moving", str(root / "landmarks_moving" / "a.csv"), "--quiet"])
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    np.testing.assert_allclose(np.asarray(res["affine"])[:2], p.affine, atol=1e-3)
    assert res["landmarks_after"]["lre_mean"] < 0.01


def test_the_commands_offer_exactly_the_registries_names():
    """`register` / `evaluate registration` spell their --method / --similarity choices out (the
    parser must not import torch); they stay equal to the registries the code owns."""
    import argparse

    from fmdepth.commands import evaluate_registration, register
    from fmdepth.losses.similarity import SIMILARITIES
    from fmdepth.registration import METHODS

    for module in (register, evaluate_registration):
        parser = argparse.ArgumentParser()
        module.add_arguments(parser)
        choices = {a.dest: a.choices for a in parser._actions if a.choices}
        assert set(choices["method"]) == set(METHODS), module.__name__
        assert set(choices["similarity"]) == set(SIMILARITIES), module.__name__


def test_register_flip_average_with_a_checkpoint(pair_dir, tmp_path, capsys, monkeypatch):
    from fmdepth.config import config_to_dict, load_config
    from fmdepth.core.checkpoint import save_checkpoint
    from fmdepth.models.registration import LearnedRegistration, build_registration_system

    root, _ = pair_dir
    assert main(_args(root, tmp_path / "o", "--flip-average")) == 2
    err = capsys.readouterr().err
    assert "--flip-average" in err and "--checkpoint" in err
    cfg = load_config(None, ["task=registration", "registration.method=deformable", "registration.unet_depth=2",
                             "registration.unet_width=4"])
    system = build_registration_system(cfg)
    ckpt = str(tmp_path / "last.pt")
    save_checkpoint({"config": config_to_dict(cfg), "models": {k: m.state_dict() for k, m in system.trainable_models().items()},
                     "optimizer": {}, "scheduler": {}, "scaler": None, "step": 1, "epoch": 0, "version": "0.1.0",
                     "rng": {}, "best_metric": None}, ckpt)
    calls, register = [], LearnedRegistration.register

    def spy(self, fixed, moving, flip_average=False):
        calls.append(flip_average)
        return register(self, fixed, moving, flip_average=flip_average)

    monkeypatch.setattr(LearnedRegistration, "register", spy)
    for extra, out in (((), "plain"), (("--flip-average",), "flipped")):
        assert main(_args(root, tmp_path / out, "--checkpoint", ckpt, *extra)) == 0
        assert os.path.isfile(tmp_path / out / "result.json")
    assert calls == [False, True]
