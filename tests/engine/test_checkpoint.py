import os
import pickle

import pytest
import torch

from fmdepth.core import checkpoint as ckpt_mod
from fmdepth.core.checkpoint import (REQUIRED_KEYS, CheckpointError, check_compatible,
                                       get_rng_state, load_checkpoint, save_checkpoint,
                                       set_rng_state)


def _payload(net=None, **extra):
    net = net or torch.nn.Linear(3, 2)
    p = {k: None for k in REQUIRED_KEYS}
    p.update(config={"task": "depth", "model": {"depth_layers": 18}}, models={"depth": net.state_dict()},
             optimizer={"state": {}, "param_groups": []}, scheduler={"step": 0}, step=5, epoch=1,
             version="0.1.0", rng={"world_size": 1, "states": [get_rng_state()]})
    p.update(extra)
    return p


def test_roundtrip_with_weights_only(tmp_path):
    path = str(tmp_path / "c.pt")
    net = torch.nn.Linear(3, 2)
    save_checkpoint(_payload(net), path)
    raw = torch.load(path, weights_only=True)  # plain data only
    assert torch.equal(raw["models"]["depth"]["weight"], net.weight.detach())
    assert load_checkpoint(path)["step"] == 5


def test_crash_during_save_leaves_previous_file_and_no_partial(tmp_path, monkeypatch):
    path = str(tmp_path / "last.pt")
    save_checkpoint(_payload(step=1), path)
    before = open(path, "rb").read()

    def exploding_save(obj, fh, *a, **k):
        fh.write(b"partial bytes")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(_payload(step=2), path)
    assert open(path, "rb").read() == before
    assert os.listdir(tmp_path) == ["last.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_load_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_checkpoint(str(tmp_path / "nope.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(str(junk))
    bare = tmp_path / "bare.pt"
    torch.save({"state_dict": {}}, bare)
    with pytest.raises(CheckpointError, match="missing key.*config"):
        load_checkpoint(str(bare))

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as fh:
        pickle.dump(Evil(), fh)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(str(evil))


def test_check_compatible():
    net = torch.nn.Linear(3, 2)
    ck = _payload(net)
    check_compatible(ck, {"task": "depth", "model": {"depth_layers": 18}}, {"depth": net})
    with pytest.raises(CheckpointError, match="model.depth_layers"):
        check_compatible(ck, {"task": "depth", "model": {"depth_layers": 50}}, {"depth": net})
    with pytest.raises(CheckpointError, match=r"weight has shape \(2, 3\)"):
        check_compatible(ck, {"task": "depth", "model": {"depth_layers": 18}},
                         {"depth": torch.nn.Linear(4, 2)})
    with pytest.raises(CheckpointError, match="'pose' is not in the checkpoint"):
        check_compatible(ck, {"task": "depth", "model": {"depth_layers": 18}},
                         {"depth": net, "pose": net})


def test_rng_state_roundtrip(tmp_path):
    import random

    import numpy as np

    state = get_rng_state()
    first = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    path = str(tmp_path / "r.pt")
    save_checkpoint(_payload(rng={"world_size": 1, "states": [state]}), path)
    set_rng_state(load_checkpoint(path)["rng"]["states"][0])
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == first
