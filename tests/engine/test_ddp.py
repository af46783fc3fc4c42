import os
import subprocess
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from engine_tiny_system import tiny_config, tiny_task  # noqa: E402

from fmdepth.core.checkpoint import load_checkpoint  # noqa: E402
from fmdepth.engine.trainer import train  # noqa: E402


@pytest.mark.slow
def test_ddp_gloo_two_processes(tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    worker = os.path.join(os.path.dirname(__file__), "ddp_worker.py")
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         worker, str(run), str(out)],
        env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = torch.load(out / "rank0.pt", weights_only=True)
    r1 = torch.load(out / "rank1.pt", weights_only=True)
    # 40 samples / 2 ranks / batch 4 = 5 steps per epoch, 2 epochs
    assert r0["step"] == r1["step"] == 10 and r0["epoch"] == 2
    for k in r0["weights"]:  # gradients were all-reduced: replicas stay identical
        assert torch.equal(r0["weights"][k], r1["weights"][k])
    # rank-0-only files: one config, one metrics log without duplicated steps, one event file
    assert sorted(os.listdir(run)) == ["checkpoints", "config.yaml", "metrics.jsonl", "tensorboard"]
    assert len(os.listdir(run / "tensorboard")) == 1
    steps = [ln for ln in open(run / "metrics.jsonl") if '"train"' in ln]
    assert len(steps) == 10
    assert sorted(os.listdir(run / "checkpoints")) == ["best.pt", "last.pt"]
    ck = load_checkpoint(str(run / "checkpoints" / "last.pt"))
    assert ck["rng"]["world_size"] == 2 and ck["step"] == 10
    # same result shape as a single-process run
    single = tmp_path / "single"
    train(tiny_config(epochs=2), str(single), task=tiny_task(), progress=False)
    ck1 = load_checkpoint(str(single / "checkpoints" / "last.pt"))
    assert set(ck1) == set(ck)
    assert {k: v.shape for k, v in ck1["models"]["tiny"].items()} == \
        {k: v.shape for k, v in ck["models"]["tiny"].items()}
    for k, v in ck["models"]["tiny"].items():
        assert torch.equal(v, r0["weights"][k])
