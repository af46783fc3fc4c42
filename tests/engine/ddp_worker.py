"""Worker for the DDP test: `python -m torch.distributed.run --nproc_per_node 2 ddp_worker.py RUN OUT`.

Trains the tiny system with the gloo backend and writes this rank's final weights to OUT/rank<r>.pt
(outside the run folder, so the test can check that only rank 0 wrote into RUN).
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from engine_tiny_system import tiny_config, tiny_task  # noqa: E402

from fmdepth.engine.trainer import train  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    run_dir, out_dir = sys.argv[1], sys.argv[2]
    task = tiny_task()
    res = train(tiny_config(epochs=2), run_dir, task=task, progress=False)
    rank = int(os.environ["RANK"])
    torch.save({"step": res.step, "epoch": res.epoch, "losses": res.train_losses,
                "weights": {k: v.detach().clone() for k, v in task.system.net.state_dict().items()}},
               os.path.join(out_dir, f"rank{rank}.pt"))
