import os

import pytest

from fmdepth.cli import main


def _cfg(tmp_path, text="train:\n  epochs: 2\n"):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return str(p)


@pytest.mark.parametrize("text, override, key", [
    ("train:\n  epochz: 2\n", None, "train.epochz"),
    ("optim:\n  lr: fast\n", None, "optim.lr"),
    ("train:\n  batch_size: 0\n", None, "train.batch_size"),
    ("train:\n  epochs: 2\n", "train.amp=fp32", "train.amp"),
    ("train:\n  epochs: 2\n", "model.depth_layers=19", "model.depth_layers"),
])
def test_config_errors_name_the_key_before_work(tmp_path, capsys, text, override, key):
    argv = ["train", "--config", _cfg(tmp_path, text), "--data", str(tmp_path / "nowhere"),
            "--out", str(tmp_path / "run")]
    if override:
        argv += ["--set", override]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"'{key}'" in err and err.startswith("fmdepth train: error:")
    assert not os.path.exists(tmp_path / "run")


def test_missing_data_path(tmp_path, capsys):
    assert main(["train", "--config", _cfg(tmp_path), "--data", str(tmp_path / "nowhere"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "dataset folder not found" in capsys.readouterr().err
    assert main(["train", "--config", _cfg(tmp_path), "--out", str(tmp_path / "run")]) == 2
    assert "--data" in capsys.readouterr().err


def test_refuses_existing_run_without_resume(tmp_path, capsys):
    (tmp_path / "data").mkdir()
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("task: depth\n")
    assert main(["train", "--config", _cfg(tmp_path), "--data", str(tmp_path / "data"),
                 "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err
    assert (run / "config.yaml").read_text() == "task: depth\n"
    assert main(["train", "--config", _cfg(tmp_path), "--data", str(tmp_path / "data"),
                 "--out", str(tmp_path / "fresh"), "--resume"]) == 2
    assert "cannot resume" in capsys.readouterr().err


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and "--resume" in out and "torchrun" in out
