"""The self-supervised depth / ego-motion system with the feature-metric loss (FeatDepth).

:class:`DepthSystem` composes :mod:`fmdepth.networks` (DepthNet, PoseNet, FeatureNet),
:mod:`fmdepth.geometry` (warps) and :mod:`fmdepth.losses` into one trainable module following
the engine's :class:`~fmdepth.core.system.System` protocol. It is a pure model: it reads a
:class:`~fmdepth.data.DepthBatch` and returns a :class:`~fmdepth.core.system.StepOutput`; it
does no I/O (weights files are read by :mod:`fmdepth.tasks.loading`).

Objective (``loss`` = :class:`~fmdepth.config.LossConfig`), for the target frame 0 and source
frames S (temporal neighbours through PoseNet, and the stereo frame ``'s'`` through
``batch.stereo_T``)::

    L = photometric / |scales| * Σ_s  mean( automask · min_S pe(I_0, I_S→0(D_s)) )
      + Σ_s (smoothness * L_smooth1(d_s) + smoothness2 * L_smooth2(d_s)) / 2**s / |scales|
      + feature_metric * L_fm(φ_0, φ_S→0(D_0))                 (FeatureNet features, level(s) l)
      + [joint] FeatureNet objective (reconstruction + discriminative + convergent)

where each disparity ``d_s`` is upsampled to full resolution before ``disp_to_depth`` and
warping (Monodepth2), ``pe`` is SSIM+L1 and the auto-mask keeps pixels whose warped error beats
the un-warped (identity) error.

Auto-mask warm-up (``loss.automask_warmup``, 300 optimizer steps by default): from random
initialisation PoseNet's motion is tiny (x0.01 output scale), so every warp is within a fraction
of a pixel of the identity and ``pe(warped) - pe(identity)`` is, to first order, ``g(p) . t``
for the current translation ``t``. The mask then keeps exactly the pixels where the *current*
(random) motion already helps, and the masked gradient reinforces that random direction instead
of pointing at the true motion (measured: cosine +0.2..+0.8 with the initial translation for
every random start, -0.55..-0.99 without the mask; ``tests/models/test_automask_warmup.py``).
Monodepth2's own trainer has the same trap once its sampling is made exact (its ``grid_sample``
runs with ``align_corners=False`` on current torch while its pixel normalisation assumes
``True``, a 0.5 px expansion of every warp that happens to favour forward motion; with
``align_corners=True`` the same trainer ends worse than a constant depth). The loss therefore
runs without the mask for the first steps, while the motion becomes real, and with it after.

The feature-metric term uses the scale-0 depth resized to the
feature level's resolution and FeatureNet features computed once per frame, only up to the
level the loss needs.

Training modes (``loss.mode``):

* ``joint``: DepthNet, PoseNet and FeatureNet trained together (FeatureNet's own objective is
  added to the loss).
* ``featurenet``: stage 1, FeatureNet alone on its objective; depth and pose nets not built.
* ``depth``: stage 2, FeatureNet frozen (eval mode, ``torch.no_grad``, no parameters in the
  optimizer); its weights come from ``model.feature_weights``.
* ``two_stage`` is not a system: ``fmdepth train`` runs ``featurenet`` then ``depth`` with the
  stage-1 weights (``fmdepth.commands.train.two_stage_configs``).

With ``loss.feature_metric = 0`` (and mode joint/depth) FeatureNet is neither built nor run:
the same code path is the photometric-only Monodepth2-style baseline.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from fmdepth.config import ConfigError, LossConfig, ModelConfig
from fmdepth.core.system import StepOutput
from fmdepth.geometry import (disp_to_depth, inverse_warp, pose_vec_to_matrix, scale_intrinsics)
from fmdepth.losses import (automask, edge_aware_smoothness, feature_metric_loss, featurenet_loss,
                            min_reprojection, photometric_error)
from fmdepth.networks import DepthNet, FeatureNet, PoseNet

FrameId = Union[int, str]


def colorize(values: torch.Tensor, cmap: str = "magma", vmax: Optional[float] = None) -> torch.Tensor:
    """Map a single-channel image to RGB with a matplotlib colour map.

    Args:
        values: (1, H, W) or (H, W) non-negative values (e.g. a disparity).
        cmap: matplotlib colour map name.
        vmax: value mapped to the top of the map (default: the 95th percentile).

    Returns:
        (3, H, W) float tensor in [0, 1] on ``values``' device.
    """
    from matplotlib import colormaps  # heavy import, only when images are asked for

    if values.dim() == 3:
        if values.shape[0] != 1:
            raise ValueError(f"values must be (1, H, W) or (H, W), got {tuple(values.shape)}")
        values = values[0]
    if values.dim() != 2:
        raise ValueError(f"values must be (1, H, W) or (H, W), got {tuple(values.shape)}")
    v = values.detach().float()
    if vmax is None:
        vmax = float(torch.quantile(v.flatten()[:1_000_000], 0.95)) if v.numel() else 1.0
    vmin = float(v.min())
    scale = max(vmax - vmin, 1e-8)
    idx = ((v - vmin) / scale).clamp(0, 1) * 255
    lut = torch.tensor(colormaps[cmap](range(256))[:, :3], dtype=torch.float32, device=v.device)  # (256, 3)
    return lut[idx.round().long()].permute(2, 0, 1).contiguous()  # (3, H, W)


class DepthSystem(nn.Module):
    """DepthNet + PoseNet (+ FeatureNet) trained with the (feature-)metric objective.

    Args:
        model: network settings (:class:`~fmdepth.config.ModelConfig`).
        loss: objective and training mode (:class:`~fmdepth.config.LossConfig`).
        frame_ids: temporal frames of a sample; must contain 0 (the target). Others are sources.
        stereo: also use the stereo frame ``'s'`` (pose from ``batch.stereo_T``) as a source.

    Attributes:
        depth_net, pose_net, feature_net: the networks (None where the mode does not need them).
        source_ids: source frames in loss order (temporal in ``frame_ids`` order, then ``'s'``).
    """

    def __init__(self, model: ModelConfig, loss: LossConfig, frame_ids: Sequence[int] = (0, -1, 1),
                 stereo: bool = False):
        super().__init__()
        model.validate("model")
        loss.validate("loss")
        if loss.mode == "two_stage":
            raise ConfigError("config key 'loss.mode': two_stage is a schedule of two runs, not a system: "
                              "`fmdepth train` runs it (stage 1 loss.mode=featurenet, then stage 2 "
                              "loss.mode=depth); build each stage with its own mode")
        frame_ids = list(frame_ids)
        if 0 not in frame_ids or len(set(frame_ids)) != len(frame_ids):
            raise ValueError(f"frame_ids must contain 0 once and no duplicates, got {frame_ids}")
        if any(not isinstance(f, int) for f in frame_ids):
            raise ValueError(f"frame_ids must be integers (use stereo=True for 's'), got {frame_ids}")
        if loss.mode != "featurenet" and max(loss.scales) >= model.num_scales:
            raise ConfigError(f"config key 'loss.scales': scale {max(loss.scales)} needs "
                              f"model.num_scales > {max(loss.scales)}, got {model.num_scales}")
        self.model_cfg = model
        self.loss_cfg = loss
        self.mode = loss.mode
        self.frame_ids = frame_ids
        self.stereo = bool(stereo)
        self.temporal_ids: List[int] = [f for f in frame_ids if f != 0]
        self.source_ids: List[FrameId] = list(self.temporal_ids) + (["s"] if self.stereo else [])
        if self.mode != "featurenet" and not self.source_ids:
            raise ValueError("the depth system needs at least one source frame: add a temporal "
                             "neighbour to frame_ids (e.g. [0, -1, 1]) or set stereo=True")

        trains_depth = self.mode != "featurenet"
        self.uses_feature_metric = trains_depth and loss.feature_metric > 0
        self.depth_net: Optional[DepthNet] = (
            DepthNet(model.depth_layers, model.pretrained, model.num_scales, input_norm=model.input_norm,
                     decoder=model.depth_decoder) if trains_depth else None)
        self.pose_net: Optional[PoseNet] = (
            PoseNet(model.pose_layers, model.pretrained, num_frames=2, output_scale=model.pose_scale,
                    input_norm=model.input_norm)
            if trains_depth and self.temporal_ids else None)
        needs_feature = self.mode == "featurenet" or self.uses_feature_metric
        self.feature_net: Optional[FeatureNet] = (
            FeatureNet(model.feature_layers, model.pretrained, num_scales=4,
                       input_norm=model.feature_input_norm) if needs_feature else None)
        if self.mode == "depth" and self.feature_net is not None:
            self.feature_net.requires_grad_(False)
            self.feature_net.eval()

    # ------------------------------------------------------------------------ System protocol
    def train(self, mode: bool = True) -> "DepthSystem":
        super().train(mode)
        if self.mode == "depth" and self.feature_net is not None:
            self.feature_net.eval()  # frozen: batch-norm statistics must not move
        return self

    def trainable_models(self) -> Dict[str, nn.Module]:
        """``depth``, ``pose``, ``feature``: every network built (frozen FeatureNet included)."""
        models = {"depth": self.depth_net, "pose": self.pose_net, "feature": self.feature_net}
        return {name: m for name, m in models.items() if m is not None}

    def parameter_groups(self) -> List[dict]:
        """One group per trained network (the frozen FeatureNet of mode ``depth`` is left out)."""
        trained = {"joint": ("depth", "pose", "feature"), "featurenet": ("feature",),
                   "depth": ("depth", "pose")}[self.mode]
        groups = []
        for name, module in self.trainable_models().items():
            if name in trained:
                params = [p for p in module.parameters() if p.requires_grad]
                if params:
                    groups.append({"params": params, "name": name})
        return groups

    # ------------------------------------------------------------------------------- inference
    def predict_disparity(self, image: torch.Tensor) -> torch.Tensor:
        """Full-resolution disparity in [0, 1].

        Args:
            image: (B, 3, H, W) in [0, 1], H and W multiples of 32.

        Returns:
            (B, 1, H, W) sigmoid disparity (``disp_to_depth`` with ``model.min/max_depth`` gives
            depth up to scale).
        """
        if self.depth_net is None:
            raise RuntimeError("this system was built with loss.mode=featurenet and has no DepthNet")
        return self.depth_net(image)[0]

    def predict_depth(self, image: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, 1, H, W) depth in [min_depth, max_depth] (up to scale)."""
        return disp_to_depth(self.predict_disparity(image), self.model_cfg.min_depth,
                             self.model_cfg.max_depth)[1]

    def predict_poses(self, batch) -> Dict[FrameId, torch.Tensor]:
        """``src_T_tgt`` (B, 4, 4) for every source frame of ``batch``.

        PoseNet always sees the pair in time order (``[earlier, later]``) and returns
        ``later_T_earlier``; for a past source that is ``tgt_T_src`` and is inverted.
        """
        poses: Dict[FrameId, torch.Tensor] = {}
        for f in self.temporal_ids:
            if f < 0:
                pair = torch.cat([batch.net_frames[f], batch.net_frames[0]], dim=1)
            else:
                pair = torch.cat([batch.net_frames[0], batch.net_frames[f]], dim=1)
            axisangle, translation = self.pose_net(pair)
            poses[f] = pose_vec_to_matrix(axisangle, translation, invert=f < 0)
        if self.stereo:
            if batch.stereo_T is None:
                raise ValueError("batch.stereo_T is None but the system uses the stereo frame 's' "
                                 "(data.stereo must be true for the dataset too)")
            poses["s"] = batch.stereo_T
        return poses

    # -------------------------------------------------------------------------------- training
    def _check_batch(self, batch) -> None:
        needed = [0] + (self.source_ids if self.mode != "featurenet" else [])
        for f in needed:
            if f not in batch.frames or f not in batch.net_frames:
                raise ValueError(f"batch is missing frame {f!r}: the system uses frames {needed}, "
                                 f"the batch has {list(batch.frames)} (check data.frame_ids / data.stereo)")
        target = batch.frames[0][0]
        if target.dim() != 4 or target.shape[1] != 3:
            raise ValueError(f"batch.frames[0][0] must be (B, 3, H, W), got {tuple(target.shape)}")
        if self.mode != "featurenet":
            need = max(self.loss_cfg.scales) + 1
            if len(batch.frames[0]) < need:
                raise ValueError(f"batch.frames[0] has {len(batch.frames[0])} scales, loss.scales "
                                 f"{self.loss_cfg.scales} needs {need} (data.num_scales)")

    def _featurenet_objective(self, features: List[torch.Tensor], recons: List[torch.Tensor],
                              image: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """FeatureNet's loss; levels smaller than 3x3 (tiny inputs) have no 2nd-order gradients
        and are left out of the discriminative/convergent terms."""
        usable = [f for f in features if min(f.shape[-2:]) >= 3]
        if not usable:
            raise ValueError(f"image {tuple(image.shape)} is too small for FeatureNet's objective")
        c = self.loss_cfg
        weights = {"reconstruction": c.featurenet_reconstruction, "discriminative": c.featurenet_discriminative,
                   "convergent": c.featurenet_convergent}
        return featurenet_loss(usable, recons, image, weights)

    def training_step(self, batch, step: Optional[int], want_images: bool = False) -> StepOutput:
        """One step of the objective on a :class:`~fmdepth.data.DepthBatch` (on the device).

        ``step`` is the optimizer step (it ends ``loss.automask_warmup``); ``None`` evaluates the
        full objective (auto-mask as configured), e.g. for a validation loss.
        """
        self._check_batch(batch)
        if self.mode == "featurenet":
            return self._featurenet_step(batch, want_images)
        return self._depth_step(batch, step, want_images)

    def _featurenet_step(self, batch, want_images: bool) -> StepOutput:
        image = batch.frames[0][0]
        features, recons = self.feature_net(image)
        total, parts = self._featurenet_objective(features, recons, image)
        scalars = {"loss": float(total.detach())}
        scalars.update({f"featurenet/{k}": float(v) for k, v in parts.items()})
        images = {}
        if want_images:
            images["input"] = image[0].detach().clamp(0, 1)
            images["featurenet_reconstruction"] = recons[0][0].detach().clamp(0, 1)
        return StepOutput(loss=total, scalars=scalars, images=images)

    def _depth_step(self, batch, step: Optional[int], want_images: bool) -> StepOutput:
        disps = self.depth_net(batch.net_frames[0])  # list over scales, (B, 1, H/2^s, W/2^s)
        poses = self.predict_poses(batch)
        return self.compute_losses(batch, disps, poses, want_images, step=step)

    def compute_losses(self, batch, disps: List[torch.Tensor], poses: Dict[FrameId, torch.Tensor],
                       want_images: bool = False, step: Optional[int] = None) -> StepOutput:
        """The depth objective for given disparities and poses (what ``training_step`` runs
        after the depth and pose networks; callable directly, e.g. with ground-truth depth).

        Args:
            batch: a :class:`~fmdepth.data.DepthBatch`.
            disps: disparities in [0, 1] per scale, scale s (B, 1, H/2**s, W/2**s), covering
                ``loss.scales`` (and scale 0 for the feature-metric term).
            poses: ``src_T_tgt`` (B, 4, 4) for every source frame id.
            want_images: also return TensorBoard images.
            step: the optimizer step (training); the auto-mask is applied from step
                ``loss.automask_warmup`` on. ``None`` (evaluation, direct calls) applies it
                whenever ``loss.automask`` is on.
        """
        cfg = self.loss_cfg
        target = batch.frames[0][0]  # (B, 3, H, W)
        height, width = target.shape[-2:]
        K, min_d, max_d = batch.K[0], self.model_cfg.min_depth, self.model_cfg.max_depth
        sources = [batch.frames[f][0] for f in self.source_ids]

        use_automask = cfg.automask and (step is None or step >= cfg.automask_warmup)
        identity = None
        if use_automask:
            with torch.no_grad():
                identity = torch.cat([photometric_error(src, target, cfg.ssim_weight) for src in sources],
                                     dim=1)  # (B, S, H, W)

        scalars: Dict[str, float] = {}
        images: Dict[str, torch.Tensor] = {}
        photo_total = target.new_zeros(())
        smooth1_total = target.new_zeros(())
        smooth2_total = target.new_zeros(())
        mask0 = None
        depth0 = None
        for s in cfg.scales:
            disp = disps[s]
            disp_full = disp if s == 0 else F.interpolate(disp, size=(height, width), mode="bilinear",
                                                          align_corners=False)
            _, depth = disp_to_depth(disp_full, min_d, max_d)  # (B, 1, H, W)
            if s == 0:
                depth0 = depth
            warped_list = []
            errors = []
            for f, src in zip(self.source_ids, sources):
                warped, _ = inverse_warp(src, depth, poses[f], K, padding_mode="border")
                warped_list.append(warped)
                errors.append(photometric_error(warped, target, cfg.ssim_weight))
            reproj = torch.cat(errors, dim=1)  # (B, S, H, W)
            if cfg.min_reprojection:
                per_pixel, _ = min_reprojection(reproj)  # (B, 1, H, W)
            else:
                per_pixel = reproj.mean(dim=1, keepdim=True)
            if use_automask:
                mask = automask(reproj, identity)  # (B, 1, H, W), no grad
                per_pixel = per_pixel * mask
                if mask0 is None:
                    mask0 = mask
            photo_total = photo_total + per_pixel.mean()
            image_s = batch.frames[0][s]  # (B, 3, H/2^s, W/2^s)
            if cfg.smoothness > 0:
                smooth1_total = smooth1_total + edge_aware_smoothness(
                    disp, image_s, order=1, normalize=cfg.disp_norm) / 2 ** s
            if cfg.smoothness2 > 0:
                smooth2_total = smooth2_total + edge_aware_smoothness(
                    disp, image_s, order=2, normalize=cfg.disp_norm) / 2 ** s
            if want_images and s == cfg.scales[0]:
                images["warped_source"] = warped_list[0][0].detach().clamp(0, 1)
        n = len(cfg.scales)
        photo = photo_total / n
        smooth1 = smooth1_total / n
        smooth2 = smooth2_total / n
        total = cfg.photometric * photo + cfg.smoothness * smooth1 + cfg.smoothness2 * smooth2
        scalars["photometric"] = float(photo.detach())
        scalars["smoothness"] = float(smooth1.detach())
        scalars["smoothness2"] = float(smooth2.detach())

        recon0 = None
        if self.uses_feature_metric:
            if depth0 is None:  # scale 0 not among loss.scales: the feature loss still uses it
                depth0 = disp_to_depth(disps[0], min_d, max_d)[1]
            fm, fn_total, fn_parts, recon0 = self._feature_terms(batch, depth0, poses)
            total = total + cfg.feature_metric * fm
            scalars["feature_metric"] = float(fm.detach())
            if fn_total is not None:
                total = total + fn_total
                scalars.update({f"featurenet/{k}": float(v) for k, v in fn_parts.items()})

        scalars["loss"] = float(total.detach())
        if mask0 is not None:
            scalars["automask_fraction"] = float(mask0.mean())
        scalars["mean_disp"] = float(disps[0].detach().mean())
        for f in self.temporal_ids:
            scalars[f"pose/translation_{f}"] = float(poses[f][:, :3, 3].detach().norm(dim=1).mean())

        if want_images:
            images["input"] = target[0].detach().clamp(0, 1)
            images["disparity"] = colorize(disps[0][0])
            if mask0 is not None:
                images["automask"] = mask0[0].detach()
            if self.feature_net is not None:
                if recon0 is None:
                    with torch.no_grad():
                        recon0 = self.feature_net(target[:1])[1][0]
                images["featurenet_reconstruction"] = recon0[0].detach().clamp(0, 1)
        return StepOutput(loss=total, scalars=scalars, images=images)

    def _feature_terms(self, batch, depth0: torch.Tensor, poses: Dict[FrameId, torch.Tensor]
                       ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Dict[str, torch.Tensor], Optional[torch.Tensor]]:
        """Feature-metric loss (+ FeatureNet's objective in joint mode).

        Features are computed once per frame: the target (full forward in joint mode, where the
        reconstruction is also trained) and all sources in one batched ``encode`` call that stops
        at the deepest level the loss uses. In mode ``depth`` FeatureNet runs under no_grad.
        """
        cfg = self.loss_cfg
        levels = sorted(cfg.feature_levels)
        target = batch.frames[0][0]
        sources = [batch.frames[f][0] for f in self.source_ids]
        b = target.shape[0]
        fn_total, fn_parts, recon0 = None, {}, None
        if self.mode == "joint":
            feats_t, recons = self.feature_net(target)
            fn_total, fn_parts = self._featurenet_objective(feats_t, recons, target)
            recon0 = recons[0]
            feats_s = self.feature_net.encode(torch.cat(sources, dim=0), levels=levels)
        else:  # frozen stage 2
            with torch.no_grad():
                feats_all = self.feature_net.encode(torch.cat([target] + sources, dim=0), levels=levels)
            feats_t = [f[:b] for f in feats_all]
            feats_s = [f[b:] for f in feats_all]

        height, width = target.shape[-2:]
        fm = target.new_zeros(())
        src_T_tgt = [poses[f] for f in self.source_ids]
        for level in levels:
            ft = feats_t[level]  # (B, C, h, w)
            h, w = ft.shape[-2:]
            depth_l = F.interpolate(depth0, size=(h, w), mode="bilinear", align_corners=False)
            K_l = scale_intrinsics(batch.K[0], w / width, h / height)
            fs = list(feats_s[level].split(b, dim=0))
            fm = fm + feature_metric_loss(ft, fs, depth_l, src_T_tgt, K_l)
        return fm / len(levels), fn_total, fn_parts, recon0


# ----------------------------------------------------------------------------------- factory
def build_depth_system(cfg, feature_state: Optional[Dict[str, torch.Tensor]] = None) -> DepthSystem:
    """Build a :class:`DepthSystem` from a full :class:`~fmdepth.config.Config` (no file I/O).

    Reads ``cfg.model``, ``cfg.loss``, ``cfg.data.frame_ids`` / ``stereo`` / ``num_scales``.
    Mode ``depth`` with a feature-metric weight > 0 needs ``model.feature_weights`` (a frozen
    random FeatureNet would be meaningless); the depth task reads that file
    (:func:`fmdepth.tasks.loading.load_feature_weights`) and passes it as ``feature_state``.

    Args:
        cfg: the resolved config.
        feature_state: FeatureNet ``state_dict`` to load (ignored when no FeatureNet is built).

    Raises:
        ConfigError: inconsistent keys (message names the key).
        ValueError: ``feature_state`` does not fit FeatureNet (``model.feature_layers``).
    """
    model, loss, data = cfg.model, cfg.loss, cfg.data
    if loss.mode != "featurenet" and max(loss.scales) >= data.num_scales:
        raise ConfigError(f"config key 'loss.scales': scale {max(loss.scales)} needs data.num_scales > "
                          f"{max(loss.scales)} (the image pyramid for smoothness), got {data.num_scales}")
    if loss.mode == "depth" and loss.feature_metric > 0 and not model.feature_weights:
        raise ConfigError("config key 'model.feature_weights': loss.mode=depth freezes FeatureNet, so it "
                          "needs trained weights: run stage 1 with --set loss.mode=featurenet, then pass "
                          "--set model.feature_weights=RUN_DIR/checkpoints/last.pt (or use loss.mode=joint)")
    system = DepthSystem(model, loss, frame_ids=data.frame_ids, stereo=data.stereo)
    if feature_state is not None and system.feature_net is not None:
        try:
            result = system.feature_net.load_state_dict(feature_state, strict=False)
        except RuntimeError as exc:  # tensor shape mismatch
            raise ValueError(f"model.feature_weights: {model.feature_weights} does not fit "
                             f"FeatureNet(ResNet{model.feature_layers}): {exc}") from None
        if result.missing_keys or result.unexpected_keys:
            raise ValueError(
                f"model.feature_weights: {model.feature_weights} does not fit FeatureNet(ResNet"
                f"{model.feature_layers}): missing {result.missing_keys[:5]}, unexpected "
                f"{result.unexpected_keys[:5]} (check model.feature_layers)")
    return system
