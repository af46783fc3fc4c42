import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
from engine_tiny_system import tiny_config, tiny_task  # noqa: E402

from fmdepth.config import ConfigError, load_config  # noqa: E402
from fmdepth.core.checkpoint import CheckpointError, load_checkpoint  # noqa: E402
from fmdepth.engine.trainer import NonFiniteLossError, lr_factor, train  # noqa: E402


def _losses(run_dir):
    out = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["split"] == "train":
                out[rec["step"]] = rec["loss"]
    return out


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_reproduces_loss_sequence(tmp_path, workers):
    over = {"val_every": 4} if workers == 0 else {}
    full = train(tiny_config(**over), str(tmp_path / "full"), task=tiny_task(), progress=False)
    assert full.step == 30  # 3 epochs x 10 batches
    cfg = tiny_config(**over)
    cfg.data.num_workers = workers
    # stop mid-epoch (step 13 of 10-step epochs), then resume in a fresh process state
    cfg.train.max_steps = 13
    part = train(cfg, str(tmp_path / "part"), task=tiny_task(), progress=False)
    assert part.stop_reason == "max_steps" and part.step == 13
    torch.manual_seed(999)  # a resumed run must not depend on the caller's RNG state
    cfg.train.max_steps = 0
    rest = train(cfg, str(tmp_path / "part"), resume=True, task=tiny_task(), progress=False)
    assert rest.step == 30
    a, b = _losses(tmp_path / "full"), _losses(tmp_path / "part")
    assert sorted(a) == sorted(b) == list(range(1, 31))
    assert [a[s] for s in a] == [b[s] for s in a]  # bit-exact
    wa = load_checkpoint(str(tmp_path / "full/checkpoints/last.pt"))["models"]["tiny"]
    wb = load_checkpoint(str(tmp_path / "part/checkpoints/last.pt"))["models"]["tiny"]
    for k in wa:
        assert torch.equal(wa[k], wb[k])


def test_run_files_and_checkpoint_contents(tmp_path):
    run = tmp_path / "run"
    res = train(tiny_config(), str(run), task=tiny_task(), progress=False)
    assert (run / "config.yaml").is_file() and (run / "metrics.jsonl").is_file()
    assert any(f.startswith("events") for f in os.listdir(run / "tensorboard"))
    assert res.best_checkpoint and os.path.isfile(res.best_checkpoint)
    raw = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    for key in ("config", "models", "optimizer", "scheduler", "scaler", "step", "epoch",
                "version", "rng", "best_metric"):
        assert key in raw
    assert raw["step"] == 30 and raw["epoch"] == 3 and raw["config"]["train"]["batch_size"] == 4
    assert raw["best_metric"] == pytest.approx(min(
        json.loads(ln)["mse"] for ln in open(run / "metrics.jsonl") if '"val"' in ln))
    assert load_config(str(run / "config.yaml")).optim.lr == 0.05
    # learning happened
    vals = [json.loads(ln)["mse"] for ln in open(run / "metrics.jsonl") if '"val"' in ln]
    assert len(vals) == 3 and vals[-1] < 0.5 * vals[0]
    assert not [f for f in os.listdir(run / "checkpoints") if ".tmp" in f]


def test_refuses_to_overwrite_existing_run(tmp_path):
    run = str(tmp_path / "run")
    cfg = tiny_config(max_steps=2)
    train(cfg, run, task=tiny_task(), progress=False)
    before = open(os.path.join(run, "checkpoints", "last.pt"), "rb").read()
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg, run, task=tiny_task(), progress=False)
    assert open(os.path.join(run, "checkpoints", "last.pt"), "rb").read() == before
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        train(cfg, str(tmp_path / "empty"), resume=True, task=tiny_task(), progress=False)


def test_resume_with_different_architecture_is_refused(tmp_path):
    run = str(tmp_path / "run")
    train(tiny_config(max_steps=3), run, task=tiny_task(), progress=False)
    last = os.path.join(run, "checkpoints", "last.pt")
    before = open(last, "rb").read()
    mtime = os.path.getmtime(last)
    with pytest.raises(CheckpointError, match=r"different architecture(.|\n)*0.weight has shape \(8, 4\)"):
        train(tiny_config(max_steps=6), run, resume=True, task=tiny_task(hidden=16), progress=False)
    cfg = tiny_config(max_steps=6)
    cfg.model.depth_layers = 18
    with pytest.raises(CheckpointError, match="model.depth_layers"):
        train(cfg, run, resume=True, task=tiny_task(), progress=False)
    assert open(last, "rb").read() == before and os.path.getmtime(last) == mtime


def test_non_finite_loss_is_skipped_then_stops(tmp_path):
    # one bad step: warned and skipped, training goes on
    with pytest.warns(RuntimeWarning, match="non-finite"):
        res = train(tiny_config(max_steps=8), str(tmp_path / "a"),
                    task=tiny_task(nan_steps={2}), progress=False)
    assert res.step == 8 and len(res.train_losses) == 7
    ck = load_checkpoint(str(tmp_path / "a/checkpoints/last.pt"))
    assert all(torch.isfinite(v).all() for v in ck["models"]["tiny"].values())
    # max_bad_steps in a row: clear stop
    cfg = tiny_config(max_bad_steps=3)
    with pytest.warns(RuntimeWarning), pytest.raises(NonFiniteLossError, match="3 consecutive"):
        train(cfg, str(tmp_path / "b"), task=tiny_task(nan_steps={4, 5, 6, 7}), progress=False)


def test_ctrl_c_writes_last_checkpoint(tmp_path):
    run = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), run, task=tiny_task(interrupt_at=7), progress=False)
    ck = load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))
    assert ck["step"] == 7 and ck["epoch"] == 0 and ck["batch_in_epoch"] == 7
    # and the interrupted run resumes onto the uninterrupted trajectory
    train(tiny_config(), run, resume=True, task=tiny_task(), progress=False)
    train(tiny_config(), str(tmp_path / "full"), task=tiny_task(), progress=False)
    a, b = _losses(tmp_path / "full"), _losses(run)
    assert a == b


def test_lr_schedule_values(tmp_path):
    assert lr_factor(0, 4, [2, 3], 0.1, 10) == pytest.approx(0.25)
    assert lr_factor(2, 4, [2, 3], 0.1, 10) == pytest.approx(0.75)
    assert lr_factor(3, 4, [2, 3], 0.1, 10) == 1.0
    assert lr_factor(19, 4, [2, 3], 0.1, 10) == 1.0
    assert lr_factor(20, 4, [2, 3], 0.1, 10) == pytest.approx(0.1)
    assert lr_factor(30, 4, [2, 3], 0.1, 10) == pytest.approx(0.01)
    assert lr_factor(5, 0, [], 0.5, 10) == 1.0
    train(tiny_config(), str(tmp_path / "r"), task=tiny_task(), progress=False)
    lrs = {json.loads(ln)["step"]: json.loads(ln)["lr"]
           for ln in open(tmp_path / "r" / "metrics.jsonl") if '"train"' in ln}
    # lr logged after step s was used for step s+1 (0-based s): base 0.05, warm-up 3, decay at epoch 2
    assert lrs[1] == pytest.approx(0.05 * 2 / 3)
    assert lrs[2] == pytest.approx(0.05)
    assert lrs[19] == pytest.approx(0.05)
    assert lrs[20] == pytest.approx(0.005)


def test_fp16_on_cpu_is_a_clear_error(tmp_path):
    cfg = tiny_config(amp="fp16")
    with pytest.raises(ValueError, match="train.amp.*CUDA"):
        train(cfg, str(tmp_path / "r"), task=tiny_task(), progress=False)
    assert not os.path.exists(tmp_path / "r" / "config.yaml")


def test_bf16_autocast_on_cpu_trains(tmp_path):
    res = train(tiny_config(amp="bf16", max_steps=5), str(tmp_path / "r"), task=tiny_task(),
                progress=False)
    assert res.step == 5 and all(torch.isfinite(torch.tensor(res.train_losses)))


def test_max_minutes_budget_stops(tmp_path):
    cfg = tiny_config(max_minutes=1e-9, epochs=100)
    res = train(cfg, str(tmp_path / "r"), task=tiny_task(), progress=False)
    assert res.stop_reason == "max_minutes" and res.step == 1
    assert os.path.isfile(res.last_checkpoint)


def test_too_small_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="train.batch_size"):
        train(tiny_config(batch_size=64), str(tmp_path / "r"), task=tiny_task(), progress=False)


@pytest.mark.parametrize("override, key", [
    ("train.epoch=3", "train.epoch"),
    ("train.batch_size=two", "train.batch_size"),
    ("optim.lr=-1", "optim.lr"),
    ("train.amp=fp8", "train.amp"),
    ("optim.decay_epochs=[30,20]", "optim.decay_epochs"),
    ("train.device=gpu", "train.device"),
])
def test_bad_config_names_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_sigterm_writes_last_checkpoint(tmp_path):
    import signal

    task = tiny_task()
    original = task.system.training_step

    def step_then_kill(batch, step, want_images=False):
        if step == 5:  # like a cluster scheduler ending the job
            os.kill(os.getpid(), signal.SIGTERM)
        return original(batch, step, want_images)

    task.system.training_step = step_then_kill
    before = signal.getsignal(signal.SIGTERM)
    run = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(), run, task=task, progress=False)
    assert load_checkpoint(os.path.join(run, "checkpoints", "last.pt"))["step"] in (5, 6)
    assert signal.getsignal(signal.SIGTERM) == before  # handler restored


def test_cosine_schedule_over_the_step_budget():
    from fmdepth.engine.schedule import LRSchedule

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = LRSchedule(opt, 0, [], 0.1, 10, schedule="cosine", final_factor=0.05, total_steps=10)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(10):
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[5] == pytest.approx(0.525)
    assert lrs[10] == pytest.approx(0.05)
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    sched2 = LRSchedule(opt, 0, [], 0.1, 10, schedule="cosine", final_factor=0.05, total_steps=10)
    sched2.load_state_dict({"step": 5})  # resume: the same point of the cosine
    assert opt.param_groups[0]["lr"] == pytest.approx(0.525)


def test_cosine_schedule_needs_a_budget_and_a_known_name():
    from fmdepth.engine.schedule import LRSchedule

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="cosine needs a budget"):
        LRSchedule(opt, 0, [], 0.1, 10, schedule="cosine")
    with pytest.raises(ValueError, match="optim.schedule: unknown 'linear'"):
        LRSchedule(opt, 0, [], 0.1, 10, schedule="linear")


def test_cosine_schedule_through_the_loop(tmp_path):
    cfg = tiny_config(max_steps=6)
    cfg.optim.schedule, cfg.optim.final_lr_factor = "cosine", 0.1
    res = train(cfg, str(tmp_path / "run"), task=tiny_task(), progress=False)
    assert res.step == 6
    lrs = [json.loads(line)["lr"] for line in open(tmp_path / "run" / "metrics.jsonl")
           if '"train"' in line]
    assert lrs and lrs[-1] < cfg.optim.lr
