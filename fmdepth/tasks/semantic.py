"""The semantic task: joint semantic alignment + landmark detection (:mod:`fmdepth.models.semantic`).

``build(cfg)`` makes a :class:`~fmdepth.models.semantic.SemanticSystem` from ``cfg.semantic``
and training pairs (:mod:`fmdepth.data.semantic`):

* default (``data.dataset: semantic_pairs``): synthetic pairs generated on the fly from the
  scikit-image sample images ``semantic.train_images`` by known random warps (deterministic per
  index and ``seed``); validation on warped pairs of the held-out ``semantic.val_images``;
* ``semantic.init_checkpoint``: start from the ``semantic`` weights of an earlier run;
* ``semantic.real_pairs: DIR`` (a folder with ``pairs.txt``): real pairs without a true field
  (the flow and equivariance terms are skipped; the photometric and joint terms train the
  aligner). Validation stays on the held-out synthetic pairs.

Validation reports PCK@alpha (``pck@0.05``, ``pck@0.1``, ``semantic.pck_alpha``) and the mean
end-point error; best.pt follows ``pck@<semantic.pck_alpha>`` (higher is better).
"""
from __future__ import annotations

from typing import Dict, Sequence

from fmdepth.core.task import Task, Validate


def make_validate(alphas: Sequence[float] = (0.05, 0.1)) -> Validate:
    """``validate(system, loader, device)`` for the engine: PCK@alpha and EPE of the aligner."""
    from fmdepth.models.semantic import evaluate_pck

    def validate(system, loader, device) -> Dict[str, float]:
        return evaluate_pck(system.aligner, loader, device, alphas)

    return validate


def build_system(cfg):
    """The :class:`~fmdepth.models.semantic.SemanticSystem` of ``cfg.semantic`` (no file read:
    :func:`build` loads ``semantic.init_checkpoint``; :func:`fmdepth.tasks.load_system` uses this)."""
    from fmdepth.models.semantic import SemanticSystem
    from fmdepth.networks.semantic import SemanticAligner

    s = cfg.semantic
    aligner = SemanticAligner(num_landmarks=s.num_landmarks, trunk_layers=s.trunk_layers,
                              pretrained=s.pretrained, corr_radius=s.corr_radius,
                              refine_radius=s.refine_radius, finest_stride=s.finest_stride,
                              affine_prior=s.affine_prior)
    weights = {"flow": s.flow_weight, "coarse_flow": s.coarse_flow_weight, "photometric": s.photometric_weight,
               "equivariance": s.equivariance_weight, "joint": s.joint_weight,
               "concentration": s.concentration_weight, "separation": s.separation_weight}
    return SemanticSystem(aligner, weights, separation_margin=s.separation_margin)


def build(cfg) -> Task:
    """Semantic system + pair datasets + PCK validation for ``cfg``."""
    from fmdepth.data.semantic import ImagePairDataset, WarpedPairDataset, collate_semantic

    d, s = cfg.data, cfg.semantic
    if d.dataset != "semantic_pairs":
        raise ValueError(f"config key 'data.dataset': the semantic task uses 'semantic_pairs', got "
                         f"'{d.dataset}' (see configs/semantic_synthetic.yaml)")
    system = build_system(cfg)
    if s.init_checkpoint:
        from fmdepth.tasks.loading import load_network_state

        system.aligner.load_state_dict(load_network_state(s.init_checkpoint, "semantic", "semantic.init_checkpoint"))
    warp = dict(height=d.height, width=d.width, num_keypoints=s.num_keypoints,
                max_rotation=s.max_rotation, max_scale=s.max_scale, max_translation=s.max_translation,
                deform=s.deform, photometric=s.photometric_change)
    if s.real_pairs:
        train_set = ImagePairDataset(s.real_pairs, d.height, d.width, s.num_keypoints)
    else:
        train_set = WarpedPairDataset(s.train_images, length=s.train_pairs, seed=cfg.seed, **warp)
    val_set = WarpedPairDataset(s.val_images, length=s.val_pairs, seed=cfg.seed + 1_000_003, **warp) \
        if s.val_images else None
    alphas = sorted({0.05, 0.1, s.pck_alpha})
    return Task(system=system, train_set=train_set, val_set=val_set, collate_fn=collate_semantic,
                validate=make_validate(alphas) if val_set is not None else None,
                best_metric=f"pck@{s.pck_alpha:g}", best_mode="max")
