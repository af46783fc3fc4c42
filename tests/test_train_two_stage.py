"""loss.mode=two_stage: `fmdepth train` runs stage 1 (FeatureNet) then stage 2 (depth, frozen FeatureNet)."""
import json
import os

import pytest
import torch

from fmdepth.commands.train import two_stage_configs
from fmdepth.config import ConfigError, load_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_two_stage_configs_map_each_stage():
    cfg = load_config(None, ["loss.mode=two_stage", "loss.stage1_epochs=3", "loss.stage1_steps=7",
                             "train.epochs=5", "train.max_steps=11"])
    (n1, c1, d1), (n2, c2, d2) = two_stage_configs(cfg, "RUN")
    assert (n1, d1, n2, d2) == ("stage1", os.path.join("RUN", "stage1"), "stage2", os.path.join("RUN", "stage2"))
    assert c1.loss.mode == "featurenet" and (c1.train.epochs, c1.train.max_steps) == (3, 7)
    assert c2.loss.mode == "depth" and (c2.train.epochs, c2.train.max_steps) == (5, 11)
    assert c2.model.feature_weights == os.path.join("RUN", "stage1", "checkpoints", "last.pt")
    assert cfg.loss.mode == "two_stage"  # the given config is not modified
    c1.validate(), c2.validate()
    # stage1_epochs 0: stage 1 gets train.epochs, no step limit
    (_, c1, _), _ = two_stage_configs(load_config(None, ["loss.mode=two_stage", "train.epochs=4"]), "R")
    assert (c1.train.epochs, c1.train.max_steps) == (4, 0)


def test_two_stage_refuses_given_feature_weights_and_zero_feature_metric():
    cfg = load_config(None, ["loss.mode=two_stage", "model.feature_weights=x.pt"])
    with pytest.raises(ValueError, match="model.feature_weights"):
        two_stage_configs(cfg, "RUN")
    with pytest.raises(ConfigError, match="loss.feature_metric"):
        load_config(None, ["loss.mode=two_stage", "loss.feature_metric=0"])
    with pytest.raises(ConfigError, match="loss.stage1_epochs"):
        load_config(None, ["loss.stage1_steps=-1"])


def test_depth_system_refuses_two_stage():
    from fmdepth.models.depth import build_depth_system

    cfg = load_config(None, ["loss.mode=two_stage", "model.depth_layers=18", "model.feature_layers=18"])
    with pytest.raises(ConfigError, match="two_stage is a schedule"):
        build_depth_system(cfg)


def test_kitti_featdepth_config_is_two_stage():
    cfg = load_config(os.path.join(ROOT, "configs", "kitti_featdepth_r50_640x192.yaml"))
    assert cfg.loss.mode == "two_stage" and not cfg.model.feature_weights


def _lines(path):
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


@pytest.mark.slow
def test_two_stage_end_to_end_with_resume(tmp_path, capsys):
    """Both stages in one run folder; resume inside stage 1, then after it (stage 1 not redone)."""
    from fmdepth.cli import main
    from fmdepth.data.synthetic import render_dataset

    torch.set_num_threads(1)
    data = render_dataset(str(tmp_path / "synth"), drives=2, frames=6, height=64, width=96,
                          velodyne=False, supersample=1, progress=False)
    cfgfile = tmp_path / "c.yaml"
    cfgfile.write_text(
        "data:\n  dataset: synthetic\n  split: splits\n  height: 64\n  width: 96\n  num_workers: 0\n"
        "model:\n  depth_layers: 18\n  pose_layers: 18\n  feature_layers: 18\n"
        "loss:\n  mode: two_stage\n  stage1_steps: 2\n"
        "train:\n  epochs: 100\n  max_steps: 2\n  batch_size: 2\n  log_every: 1\n  image_every: 0\n"
        "  val_every: 0\n  device: cpu\n")
    run = tmp_path / "run"
    base = ["train", "--config", str(cfgfile), "--data", data, "--out", str(run), "--quiet"]

    # 1. stage 1 stops on the time budget after its first step: stage 2 is not started
    assert main(base + ["--set", "train.max_minutes=1e-6"]) == 0
    assert "stage 2 not started" in capsys.readouterr().out
    assert (run / "config.yaml").is_file() and not (run / "stage2").exists()
    assert not (run / "stage1" / "finished.json").exists()
    ck1 = torch.load(run / "stage1" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ck1["step"] == 1 and set(ck1["models"]) == {"feature"}

    # a second start without --resume is refused, the folder is left as it was
    assert main(base) == 2
    assert "--resume" in capsys.readouterr().err

    # 2. --resume continues stage 1 (step 1 -> 2), then runs stage 2 with the frozen FeatureNet
    assert main(base + ["--resume"]) == 0
    out = capsys.readouterr().out
    assert "(resumed)" in out and "stage 2" in out
    done = json.loads((run / "stage1" / "finished.json").read_text())
    assert done["step"] == 2 and done["stop_reason"] == "max_steps"
    ck1 = torch.load(run / "stage1" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    ck2 = torch.load(run / "stage2" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ck1["step"] == 2 and ck2["step"] == 2
    assert ck2["config"]["loss"]["mode"] == "depth"
    assert ck2["config"]["model"]["feature_weights"] == str(run / "stage1" / "checkpoints" / "last.pt")
    assert set(ck2["models"]) >= {"depth", "pose"}
    # stage 2 trained depth/pose only: its FeatureNet (if saved) is stage 1's, unchanged
    if "feature" in ck2["models"]:
        for k, v in ck1["models"]["feature"].items():
            assert torch.equal(v, ck2["models"]["feature"][k]), k
    s1_metrics = (run / "stage1" / "metrics.jsonl").read_text()
    s1_mtime = os.path.getmtime(run / "stage1" / "checkpoints" / "last.pt")
    assert [r["step"] for r in _lines(run / "stage2" / "metrics.jsonl") if r["split"] == "train"] == [1, 2]

    # 3. --resume after stage 1 finished: stage 1 is not redone, stage 2 continues 2 -> 4
    assert main(base + ["--resume", "--set", "train.max_steps=4"]) == 0
    assert "not redone" in capsys.readouterr().out
    assert (run / "stage1" / "metrics.jsonl").read_text() == s1_metrics
    assert os.path.getmtime(run / "stage1" / "checkpoints" / "last.pt") == s1_mtime
    ck2 = torch.load(run / "stage2" / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ck2["step"] == 4
    assert [r["step"] for r in _lines(run / "stage2" / "metrics.jsonl") if r["split"] == "train"] == [1, 2, 3, 4]
