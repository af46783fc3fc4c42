"""`fmdepth correspond`: files written, bad input."""
import json

import numpy as np
import pytest

from fmdepth.cli import main


@pytest.fixture
def image_files(tmp_path, make_pair):
    import imageio.v3 as iio

    a, b, _ = make_pair(64)
    pa, pb = tmp_path / "a.png", tmp_path / "b.png"
    iio.imwrite(pa, (a.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
    gray = (b.mean(0).numpy() * 255).round().astype(np.uint8)  # grayscale B: replicated with a note
    iio.imwrite(pb, gray)
    return pa, pb


def test_correspond_writes_json_text_and_png(image_files, tmp_path, capsys):
    pa, pb = image_files
    out = tmp_path / "out"
    rc = main(["correspond", str(pa), str(pb), "--k", "5", "--weights", "none", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "grayscale" in text and "best-buddy pairs" in text
    data = json.loads((out / "points.json").read_text())
    assert len(data["points_a"]) == len(data["points_b"]) == len(data["scores"]) == 5
    lines = (out / "points_a.txt").read_text().strip().splitlines()
    assert len(lines) == 5 and len(lines[0].split()) == 2
    assert len((out / "points_b.txt").read_text().strip().splitlines()) == 5
    png = (out / "pairs.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_correspond_bad_input_exits_2(image_files, tmp_path, capsys):
    pa, _ = image_files
    rc = main(["correspond", str(pa), str(tmp_path / "missing.png"), "--weights", "none", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "image file not found" in capsys.readouterr().err
    rc = main(["correspond", str(pa), str(pa), "--k", "0", "--weights", "none", "--out", str(tmp_path / "o")])
    assert rc == 2
