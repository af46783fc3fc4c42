"""Split files: parse them, fetch the public KITTI lists on demand, generate custom splits.

A split file has one entry per line, ``<folder> <frame_index> <side>`` (KITTI raw:
``2011_09_26/2011_09_26_drive_0002_sync 69 l``; odometry: ``9 0 l``), exactly as the public
lists published with Monodepth2. The standard lists are *not* shipped with fmdepth: they are
downloaded on first use from the Monodepth2 repository at a pinned commit, checked against
pinned sha256 sums and cached in ``$FMDEPTH_CACHE/splits`` (default ``~/.cache/fmdepth/splits``).
"""
from __future__ import annotations

import hashlib
import os
import random
import re
import tempfile
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

Entry = Tuple[str, int, str]

MONODEPTH2_COMMIT = "b676244e5a1ca55564eb5d16ab521a48f823af31"
BASE_URL = f"https://raw.githubusercontent.com/nianticlabs/monodepth2/{MONODEPTH2_COMMIT}/splits"

#: relative path -> (number of lines, sha256) of the public lists at MONODEPTH2_COMMIT.
PINNED: Dict[str, Tuple[int, str]] = {
    "benchmark/test_files.txt": (500, "b9b0746d2e5263d975fd082d6e82d592971adc9e6a2fdf370a8cf78519161d28"),
    "benchmark/train_files.txt": (72084, "060fdce26c5cd0681b6cc7620a856c697caa78fd23ab7a9ba41fb39c70ae3860"),
    "benchmark/val_files.txt": (6060, "5c65577de234037bec0c792d7bf44c60b7fb367449266054eb4612a5e92bfa08"),
    "eigen/test_files.txt": (697, "e226d4ca16e0e6e9695435014347dcf973588531330536fd8a68d298ef091a6b"),
    "eigen_benchmark/test_files.txt": (652, "d56e5e509e6960a01fb93795f85028ac6e4a82ad40e64b6e968988e4db95b9be"),
    "eigen_full/train_files.txt": (45200, "1b491141d87b7af9e6706609b7ce858c198c3a4ca61d180c7dc90815d5f2a986"),
    "eigen_full/val_files.txt": (1776, "9c4446772ec58aaa60acbeef0fa6d1e8ef1b346ad4f78272d056d10cf1993af9"),
    "eigen_zhou/train_files.txt": (39810, "00173a231642151c4693274e701ddd4cae7916520a757c7a94eae8e1173f7b0c"),
    "eigen_zhou/val_files.txt": (4424, "64a868b8d2c66c3979a2d74c22ea2e9146850d5b9f5786ed8e5f92201ba1ad04"),
    "odom/test_files_09.txt": (1590, "8b999b6f974041663ba2f8aa6456ea338089a272119b7edd702f352278f43d26"),
    "odom/test_files_10.txt": (1200, "f39c47e0c21f65d4503476375f2a786def34f54bd5d1cabf28c7e68f002986a1"),
    "odom/train_files.txt": (36671, "ced6c5fd1b0b76e2a28d68e046421c1f0df08de8fb713ca305684d263af6d0e2"),
    "odom/val_files.txt": (4075, "9cf46e1b873d6f9883015b1f77fcace51db424a1f0a765324957f46399b6db99"),
    "benchmark/eigen_to_benchmark_ids.npy": (4, "1c1ac4ea84c938622f228a4438661fdb66ec07a2380a54bd21cd28b6eeb1a4e8"),
}
SPLIT_NAMES = sorted({p.split("/")[0] for p in PINNED})


# ------------------------------------------------------------------------------------- reading
def parse_split_lines(lines: Iterable[str], source: str = "<split>") -> List[Entry]:
    """Parse split lines; blank lines and ``#`` comments are skipped.

    A line is ``<folder> <frame_index> [<side>]`` (side ``l`` or ``r``, default ``l``; frame
    indices may be zero padded).

    Raises:
        ValueError: a malformed line (message names ``source``, the line number and the text).
    """
    out: List[Entry] = []
    for n, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) not in (2, 3):
            raise ValueError(f"{source}:{n}: expected '<folder> <frame_index> <side>', got {line!r}")
        try:
            frame = int(parts[1])
        except ValueError:
            raise ValueError(f"{source}:{n}: frame index must be an integer, got {parts[1]!r}") from None
        if frame < 0:
            raise ValueError(f"{source}:{n}: frame index must be >= 0, got {frame}")
        side = parts[2] if len(parts) == 3 else "l"
        if side not in ("l", "r"):
            raise ValueError(f"{source}:{n}: side must be 'l' or 'r', got {side!r}")
        out.append((parts[0], frame, side))
    return out


def read_split(path: str) -> List[Entry]:
    """Entries ``(folder, frame_index, side)`` of a split file.

    Raises:
        FileNotFoundError: no such file; ValueError: malformed line (names file and line).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split file not found: {path}")
    with open(path, encoding="utf-8") as fh:
        return parse_split_lines(fh, path)


def write_split(path: str, entries: Sequence[Entry]) -> None:
    """Write entries as a split file (atomically)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.writelines(f"{f} {i} {s}\n" for f, i, s in entries)
    os.replace(tmp, path)


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------- fetching
def default_cache_dir() -> str:
    """``$FMDEPTH_CACHE/splits`` if set, else ``~/.cache/fmdepth/splits``."""
    root = os.environ.get("FMDEPTH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "fmdepth")
    return os.path.join(root, "splits")


def _download(url: str, dest: str, sha256: str) -> None:
    import urllib.error
    import urllib.request

    os.makedirs(os.path.dirname(dest), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dest), prefix=".download-")
    try:
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, os.fdopen(fd, "wb") as out:
                while True:
                    chunk = resp.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise FileNotFoundError(
                f"could not download {url} ({exc}). Without internet access, download it elsewhere and "
                f"pass the local file path instead of the split name, or place it at {dest}") from None
        got = sha256_file(tmp)
        if got != sha256:
            raise ValueError(f"{url}: sha256 mismatch (expected {sha256}, got {got}); the file was not kept")
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def fetch_split(name: str, cache_dir: Optional[str] = None, base_url: Optional[str] = None) -> str:
    """Local path of a standard split list (downloaded and sha256-checked on first use).

    Args:
        name: a split folder (``"eigen"``, ``"eigen_zhou"``, ``"eigen_full"``,
            ``"eigen_benchmark"``, ``"benchmark"``, ``"odom"``) -- every pinned file of that
            folder is fetched and the cached *folder* is returned -- or one file such as
            ``"eigen_zhou/train_files.txt"`` (returns the file). An existing local file or
            folder is returned unchanged (user-given splits).
        cache_dir: where to cache (default :func:`default_cache_dir`).
        base_url: mirror holding the same ``<folder>/<file>`` tree (default: Monodepth2 on
            GitHub at the pinned commit; ``file://`` URLs work too).

    Raises:
        ValueError: unknown name, or a download whose sha256 does not match the pinned one.
        FileNotFoundError: the download failed (no network): the message says what to do.
    """
    name = os.fspath(name)
    if os.path.exists(name):
        return name
    key = name.strip("/")
    if key in PINNED:
        files = [key]
    elif key in SPLIT_NAMES:
        files = [p for p in PINNED if p.split("/")[0] == key]
    else:
        raise ValueError(f"unknown split '{name}' (not a local file or folder either); known splits: "
                         f"{', '.join(SPLIT_NAMES)} or one of their files, e.g. eigen/test_files.txt")
    cache = os.path.abspath(cache_dir or default_cache_dir())
    base = (base_url or BASE_URL).rstrip("/")
    for rel in files:
        dest = os.path.join(cache, *rel.split("/"))
        sha = PINNED[rel][1]
        if os.path.isfile(dest) and sha256_file(dest) == sha:
            continue
        _download(f"{base}/{rel}", dest, sha)
    return os.path.join(cache, *key.split("/"))


def resolve_test_split(split: str) -> str:
    """The test split file named by ``split``: a file path, a folder holding ``test_files.txt``,
    or a standard split name (``eigen``, ``eigen_benchmark``, ``eigen/test_files.txt``, ...)
    fetched with :func:`fetch_split`.

    Raises:
        FileNotFoundError: none of those, naming what was looked for.
    """
    if os.path.isfile(split):
        return split
    if os.path.isdir(split):
        cand = os.path.join(split, "test_files.txt")
        if os.path.isfile(cand):
            return cand
        raise FileNotFoundError(f"split folder {split} has no test_files.txt")
    name = split.strip("/")
    if name not in PINNED and name not in SPLIT_NAMES:
        raise FileNotFoundError(f"split file not found: {split} (nor a standard split name: "
                                f"{', '.join(SPLIT_NAMES)})")
    path = fetch_split(name)
    if os.path.isdir(path):
        path = os.path.join(path, "test_files.txt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"split '{split}' resolved to {path}, which does not exist")
    return path


def verify_split(path: str, rel: str) -> None:
    """Check a local copy of a pinned list against its sha256 (ValueError if it differs)."""
    if rel not in PINNED:
        raise ValueError(f"'{rel}' is not a pinned split file")
    got = sha256_file(path)
    if got != PINNED[rel][1]:
        raise ValueError(f"{path}: sha256 {got} does not match the pinned {PINNED[rel][1]} for {rel}")


# ----------------------------------------------------------------------------------- generating
_FRAME_RE = re.compile(r"^(\d+)\.(png|jpg|jpeg)$", re.IGNORECASE)


def scan_kitti_raw(root: str, img_ext: str = ".png") -> Dict[str, List[int]]:
    """``{folder: sorted frame indices}`` of every ``<date>/<drive>/image_02/data/*<ext>`` under root."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset folder not found: {root}")
    found: Dict[str, List[int]] = {}
    for date in sorted(os.listdir(root)):
        ddir = os.path.join(root, date)
        if not os.path.isdir(ddir):
            continue
        for drive in sorted(os.listdir(ddir)):
            img_dir = os.path.join(ddir, drive, "image_02", "data")
            if not os.path.isdir(img_dir):
                continue
            idx = sorted(int(m.group(1)) for f in os.listdir(img_dir)
                         if (m := _FRAME_RE.match(f)) and f.lower().endswith(img_ext.lower()))
            if idx:
                found[f"{date}/{drive}"] = idx
    return found


def generate_split(frames: Dict[str, Sequence[int]], frame_ids: Sequence[int] = (0, -1, 1),
                   val_fraction: float = 0.1, seed: int = 0, sides: Sequence[str] = ("l",),
                   val_folders: Optional[Sequence[str]] = None) -> Tuple[List[Entry], List[Entry], List[Entry]]:
    """Train/val entries of a custom dataset, dropping frames without all temporal neighbours.

    Args:
        frames: ``{folder: frame indices present}``.
        frame_ids: temporal offsets a training sample needs (e.g. (0, -1, 1)).
        val_fraction: fraction of the usable frames (random, seeded) put into validation,
            unless ``val_folders`` names whole folders for validation.
        sides: sides to emit per frame ("l", or ("l", "r") for stereo datasets).

    Returns:
        (train, val, dropped) entry lists.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    offsets = [int(f) for f in frame_ids if not isinstance(f, str)]
    rng = random.Random(seed)
    train: List[Entry] = []
    val: List[Entry] = []
    dropped: List[Entry] = []
    for folder in sorted(frames):
        present = set(frames[folder])
        for i in sorted(present):
            entries = [(folder, i, s) for s in sides]
            if not all(i + o in present for o in offsets):
                dropped += entries
                continue
            if val_folders is not None:
                is_val = folder in val_folders
            else:
                is_val = rng.random() < val_fraction
            (val if is_val else train).extend(entries)
    return train, val, dropped
