import json
import os

import pytest

from fmdepth.cli import main
from fmdepth.commands import demo
from fmdepth.config import config_to_dict, load_config, config_from_dict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_synth_quick_yaml_matches_the_demo_settings():
    from_yaml = config_to_dict(load_config(os.path.join(ROOT, "configs", "synth_quick.yaml")))
    from_demo = config_to_dict(config_from_dict(json.loads(json.dumps(demo.DEMO_CONFIG))))
    assert from_yaml == from_demo


def test_metrics_table_format():
    m = {k: 0.1 * (i + 1) for i, k in enumerate(demo.ROW_NAMES)}
    table = demo.format_metrics_table([("model", m), ("constant depth", m)])
    lines = table.splitlines()
    assert "Abs Rel" in lines[0] and "RMSE log" in lines[0]
    assert lines[1].startswith("model") and "0.100" in lines[1] and "0.700" in lines[1]
    assert len(lines) == 4


def test_bad_arguments(capsys):
    assert main(["demo", "--minutes", "0"]) == 2
    assert "--minutes" in capsys.readouterr().err


@pytest.mark.slow
def test_demo_runs_end_to_end_with_a_short_budget(tmp_path, capsys):
    # A short budget only checks the mechanics (render -> train -> evaluate -> table + images);
    # whether the default budget beats the baseline is a training-quality question (see README).
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--minutes", "30", "--steps", "20", "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "Abs Rel" in text and "constant depth (median-scaled)" in text and "depth_grid.png" in text
    summary = json.loads((out / "demo_metrics.json").read_text())
    assert summary["steps"] == 20 and summary["test_frames"] == 40
    for row in ("model", "constant_baseline"):
        assert set(summary[row]) == set(demo.ROW_NAMES)
        assert 0 < summary[row]["abs_rel"] < 10 and 0 <= summary[row]["a1"] <= 1
    assert (out / "depth_grid.png").is_file()
    assert (out / "run" / "checkpoints" / "last.pt").is_file()
    # a second run reuses the data and trains into a new run folder
    assert main(["demo", "--out", str(out), "--minutes", "30", "--steps", "2", "--quiet"]) == 0
    assert "reusing synthetic data" in capsys.readouterr().out
    assert (out / "run-2" / "checkpoints" / "last.pt").is_file()
