import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fmdepth.data import splits
from fmdepth.data.splits import (PINNED, default_cache_dir, fetch_split, generate_split, parse_split_lines,
                                 read_split, scan_kitti_raw, sha256_file, verify_split)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_real_split_lists_parse_and_match_pinned_checksums(shared_dir):
    root = os.path.join(shared_dir, "splits")
    for rel, (lines, sha) in PINNED.items():
        path = os.path.join(root, *rel.split("/"))
        assert sha256_file(path) == sha, rel
        verify_split(path, rel)
        if rel.endswith(".txt"):
            entries = read_split(path)
            assert len(entries) == lines, rel
    eigen = read_split(os.path.join(root, "eigen", "test_files.txt"))
    assert eigen[0] == ("2011_09_26/2011_09_26_drive_0002_sync", 69, "l")  # zero-padded index parsed
    odom = read_split(os.path.join(root, "odom", "test_files_09.txt"))
    assert odom[0] == ("9", 0, "l")
    ids = np.load(os.path.join(root, "benchmark", "eigen_to_benchmark_ids.npy"), allow_pickle=False)
    assert ids.ndim == 1 and ids.size > 0


def test_fetch_from_a_mirror_verifies_and_caches(shared_dir, tmp_path):
    mirror = "file://" + os.path.join(shared_dir, "splits")
    cache = tmp_path / "cache"
    folder = fetch_split("eigen_zhou", cache_dir=str(cache), base_url=mirror)
    assert folder == str(cache / "eigen_zhou")
    assert len(read_split(os.path.join(folder, "val_files.txt"))) == 4424
    single = fetch_split("odom/test_files_10.txt", cache_dir=str(cache), base_url=mirror)
    assert os.path.isfile(single)
    # cached + verified: no download needed any more (an unreachable mirror is fine)
    assert fetch_split("eigen_zhou", cache_dir=str(cache), base_url="file:///nonexistent") == folder


def test_fetch_rejects_a_tampered_mirror(shared_dir, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(os.path.join(shared_dir, "splits", "eigen"), mirror / "eigen")
    os.chmod(mirror / "eigen" / "test_files.txt", 0o644)
    with open(mirror / "eigen" / "test_files.txt", "a") as fh:
        fh.write("2011_09_26/2011_09_26_drive_0001_sync 0 l\n")
    cache = tmp_path / "cache"
    with pytest.raises(ValueError, match="sha256 mismatch"):
        fetch_split("eigen", cache_dir=str(cache), base_url=f"file://{mirror}")
    assert not (cache / "eigen" / "test_files.txt").exists()
    assert not any(n.startswith(".download") for n in os.listdir(cache / "eigen"))


def test_fetch_errors(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match="unknown split 'eigen_zoo'"):
        fetch_split("eigen_zoo", cache_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="could not download"):
        fetch_split("eigen", cache_dir=str(tmp_path), base_url=f"file://{tmp_path}/empty")
    local = tmp_path / "mine.txt"
    local.write_text("a/b 1 l\n")
    assert fetch_split(str(local)) == str(local)  # user-given path returned unchanged
    monkeypatch.setenv("FMDEPTH_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == str(tmp_path / "c" / "splits")
    monkeypatch.delenv("FMDEPTH_CACHE")
    assert default_cache_dir() == os.path.join(os.path.expanduser("~"), ".cache", "fmdepth", "splits")


def test_parse_split_lines_errors():
    assert parse_split_lines(["# comment", "", "x 0003 r", "image 5"]) == [("x", 3, "r"), ("image", 5, "l")]
    with pytest.raises(ValueError, match="s.txt:1: side must be 'l' or 'r'"):
        parse_split_lines(["x 1 q"], "s.txt")
    with pytest.raises(ValueError, match="expected '<folder> <frame_index> <side>'"):
        parse_split_lines(["x 1 l extra"])
    with pytest.raises(ValueError, match=">= 0"):
        parse_split_lines(["x -1 l"])
    with pytest.raises(FileNotFoundError, match="split file not found"):
        read_split("/nonexistent/split.txt")


def test_generate_split_drops_frames_without_neighbours(synth_root):
    frames = scan_kitti_raw(synth_root)
    assert len(frames) == 2 and all(v == [0, 1, 2, 3, 4] for v in frames.values())
    train, val, dropped = generate_split(frames, (0, -1, 1), val_fraction=0.3, seed=1)
    assert len(train) + len(val) == 6 and len(dropped) == 4
    assert all(e[1] in (1, 2, 3) for e in train + val) and all(e[1] in (0, 4) for e in dropped)
    train2, val2, _ = generate_split({"a": [0, 1, 2, 4, 5, 6]}, (0, -2, 2), val_fraction=0.0,
                                     sides=("l", "r"))
    assert train2 == [("a", 2, "l"), ("a", 2, "r"), ("a", 4, "l"), ("a", 4, "r")] and val2 == []
    first = list(frames)[0]
    tr, va, _ = generate_split(frames, val_folders=[first])
    assert {e[0] for e in va} == {first} and first not in {e[0] for e in tr}


def test_make_split_script(synth_root, tmp_path):
    out = tmp_path / "custom"
    res = subprocess.run([sys.executable, os.path.join(REPO, "datasets", "make_split.py"), "--data", synth_root,
                          "--out", str(out), "--val-fraction", "0.5", "--sides", "l", "r"],
                         capture_output=True, text=True, check=True)
    assert "dropped" in res.stdout
    entries = read_split(str(out / "train_files.txt")) + read_split(str(out / "val_files.txt"))
    assert len(entries) == 12


def test_split_names_cover_the_pinned_folders():
    assert splits.SPLIT_NAMES == ["benchmark", "eigen", "eigen_benchmark", "eigen_full", "eigen_zhou", "odom"]
