"""Typed configuration: dataclass schema + YAML files + dotted command-line overrides.

Every key is declared once below, with its default and a one-line comment. An experiment YAML
holds only what differs from these defaults; ``--set train.epochs=3`` overrides one key. Unknown
keys, wrong types and impossible values raise :class:`ConfigError` naming the dotted key *before*
any work starts. The fully resolved config is saved with every run and checkpoint.

Sections: ``data`` (what to read), ``model``/``loss`` (the depth system), ``optim``/``train``
(the engine, shared by every task), ``registration`` and ``semantic`` (the other trainable
tasks). ``task`` selects which system ``fmdepth train`` builds.

Each section's owner validates its values in ``validate()``; the loader calls it after parsing.
Values that a registry of the code owns (registration methods, similarities, modalities) are
not listed here: this module is the bottom layer and cannot ask them, so
:func:`fmdepth.tasks.check_choices` checks them when the task is built, before any work, with
the same ``config key '...'`` message.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import yaml


class ConfigError(ValueError):
    """A config key is unknown, has the wrong type or an impossible value."""


def _check(cond: bool, key: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"config key '{key}': {message}")


# --------------------------------------------------------------------------------------- schema
@dataclass
class DataConfig:
    dataset: str = "synthetic"  # kitti_raw | kitti_odom | folder | synthetic (KITTI raw layout)
    path: str = ""  # dataset root (KITTI raw root, synthetic output, image folder ...)
    split: str = "eigen_zhou"  # split name (fetched + sha256-checked) or a folder with *_files.txt
    height: int = 192  # network input height
    width: int = 640  # network input width
    frame_ids: List[int] = field(default_factory=lambda: [0, -1, 1])  # temporal neighbours used
    stereo: bool = False  # also use the other camera of the pair as a source frame ("s")
    num_scales: int = 4  # pyramid levels returned by the dataset
    img_ext: str = ".png"  # .png or .jpg
    flip_prob: float = 0.5  # horizontal-flip augmentation probability (training only)
    jitter_prob: float = 0.5  # colour-jitter probability (training only, network input only)
    num_workers: int = 2  # DataLoader workers
    skip_missing: bool = False  # skip split entries whose files are missing (reported) instead of failing
    fov_deg: float = 70.0  # folder data without an intrinsics file: assumed horizontal field of view in degrees, stated in a warning (0 = refuse)
    val_fraction: float = 0.1  # folder data without split files: fraction of each sequence's frames held out for validation

    def validate(self, prefix: str) -> None:
        _check(self.dataset in ("kitti_raw", "kitti_odom", "folder", "synthetic", "registration_pairs",
                                "semantic_pairs"),
               f"{prefix}.dataset", f"unknown dataset '{self.dataset}'")
        _check(self.height > 0 and self.height % 32 == 0, f"{prefix}.height",
               f"must be a positive multiple of 32, got {self.height}")
        _check(self.width > 0 and self.width % 32 == 0, f"{prefix}.width",
               f"must be a positive multiple of 32, got {self.width}")
        _check(0 in self.frame_ids, f"{prefix}.frame_ids", "must contain 0 (the target frame)")
        _check(1 <= self.num_scales <= 5, f"{prefix}.num_scales", "must be in [1, 5]")
        _check(self.img_ext in (".png", ".jpg"), f"{prefix}.img_ext", "must be '.png' or '.jpg'")
        _check(0.0 <= self.flip_prob <= 1.0, f"{prefix}.flip_prob", "must be in [0, 1]")
        _check(0.0 <= self.jitter_prob <= 1.0, f"{prefix}.jitter_prob", "must be in [0, 1]")
        _check(self.num_workers >= 0, f"{prefix}.num_workers", "must be >= 0")
        _check(0.0 <= self.fov_deg < 180.0, f"{prefix}.fov_deg", f"must be in [0, 180), got {self.fov_deg}")
        _check(0.0 <= self.val_fraction < 1.0, f"{prefix}.val_fraction", f"must be in [0, 1), got {self.val_fraction}")


@dataclass
class ModelConfig:
    """The depth/pose/feature networks (owned by the depth system)."""

    depth_layers: int = 50  # ResNet depth of the DepthNet encoder (18/34/50/101/152)
    pose_layers: int = 18  # ResNet depth of the PoseNet encoder
    feature_layers: int = 50  # ResNet depth of the FeatureNet encoder
    pretrained: str = "none"  # encoder init of all nets: none | imagenet (torchvision download) | path to a ResNet state_dict
    feature_weights: str = ""  # FeatureNet weights for loss.mode=depth: a stage-1 checkpoint (.pt) or a FeatureNet state_dict
    num_scales: int = 4  # disparity scales the DepthNet outputs (scale 0 = full resolution)
    pose_scale: float = 0.01  # PoseNet output scaling (0.01 as published)
    min_depth: float = 0.1  # disparity -> depth range (disp_to_depth)
    max_depth: float = 100.0
    input_norm: str = "imagenet"  # normalisation inside the depth/pose encoders: imagenet | monodepth2 ((x-0.45)/0.225, imported Monodepth2/FeatDepth weights) | none
    feature_input_norm: str = "imagenet"  # the same for the FeatureNet encoder (none for FeatDepth's auto-encoder)
    depth_decoder: str = "monodepth2"  # DepthNet decoder: monodepth2 (skip connections, ELU) | featdepth (FeatDepth's chained residual pooling decoder)
    init_checkpoint: str = ""  # start training from the weights of this fmdepth checkpoint (e.g. one written by `fmdepth import-weights`)

    def validate(self, prefix: str) -> None:
        for k in ("depth_layers", "pose_layers", "feature_layers"):
            _check(getattr(self, k) in (18, 34, 50, 101, 152), f"{prefix}.{k}",
                   f"must be one of 18, 34, 50, 101, 152, got {getattr(self, k)}")
        _check(bool(self.pretrained), f"{prefix}.pretrained",
               "must be 'none', 'imagenet' or the path of a ResNet state_dict")
        _check(1 <= self.num_scales <= 5, f"{prefix}.num_scales", f"must be in [1, 5], got {self.num_scales}")
        _check(self.pose_scale > 0, f"{prefix}.pose_scale", f"must be > 0, got {self.pose_scale}")
        _check(0 < self.min_depth < self.max_depth, f"{prefix}.min_depth",
               f"need 0 < min_depth < max_depth, got {self.min_depth}, {self.max_depth}")
        for k in ("input_norm", "feature_input_norm"):
            _check(getattr(self, k) in ("imagenet", "monodepth2", "none"), f"{prefix}.{k}",
                   f"must be imagenet, monodepth2 or none, got {getattr(self, k)!r}")
        _check(self.depth_decoder in ("monodepth2", "featdepth"), f"{prefix}.depth_decoder",
               f"must be monodepth2 or featdepth, got {self.depth_decoder!r}")
        _check(self.depth_decoder != "featdepth" or self.num_scales <= 4, f"{prefix}.num_scales",
               f"the featdepth decoder has 4 scales, got {self.num_scales}")


LOSS_MODES = ("joint", "featurenet", "depth", "two_stage")


@dataclass
class LossConfig:
    """The depth system's objective and training mode (owned by the depth system)."""

    mode: str = "joint"  # joint (all nets trained together) | featurenet (stage 1: FeatureNet only) | depth (stage 2: FeatureNet frozen) | two_stage (`fmdepth train` runs featurenet then depth into RUN/stage1, RUN/stage2)
    stage1_epochs: int = 0  # mode=two_stage: epochs of stage 1 (FeatureNet); 0 = train.epochs (stage 2 always uses train.epochs)
    stage1_steps: int = 0  # mode=two_stage: step budget of stage 1; 0 = no limit (stage 2 uses train.max_steps)
    photometric: float = 1.0  # SSIM+L1 photometric reprojection loss
    feature_metric: float = 1e-3  # feature-metric loss (0 = Monodepth2-style photometric baseline, FeatureNet not built)
    smoothness: float = 1e-3  # edge-aware disparity smoothness, 1st order (divided by 2**scale)
    smoothness2: float = 1e-3  # edge-aware disparity smoothness, 2nd order (divided by 2**scale; 0 = off)
    ssim_weight: float = 0.85  # photometric error = ssim_weight*(1-SSIM)/2 + (1-ssim_weight)*L1
    automask: bool = True  # Monodepth2 auto-masking of pixels that the un-warped source explains better
    automask_warmup: int = 300  # optimizer steps before the auto-mask starts (0 = from the first step); see models/depth.py
    min_reprojection: bool = True  # per-pixel minimum over source frames (False = mean over sources)
    disp_norm: bool = True  # smoothness on disparity / its mean (Monodepth2); FeatDepth's stereo configs turn it off
    scales: List[int] = field(default_factory=lambda: [0, 1, 2, 3])  # disparity scales the losses use
    feature_levels: List[int] = field(default_factory=lambda: [0])  # FeatureNet encoder levels compared by the feature-metric loss
    featurenet_reconstruction: float = 1.0  # FeatureNet: image reconstruction (SSIM+L1 over scales)
    featurenet_discriminative: float = 1e-3  # FeatureNet: discriminative loss (large feature gradients)
    featurenet_convergent: float = 1e-3  # FeatureNet: convergent loss (small 2nd-order feature gradients)

    def validate(self, prefix: str) -> None:
        _check(self.mode in LOSS_MODES, f"{prefix}.mode",
               f"must be one of {', '.join(LOSS_MODES)}, got '{self.mode}'")
        for name in ("photometric", "feature_metric", "smoothness", "smoothness2",
                     "featurenet_reconstruction", "featurenet_discriminative", "featurenet_convergent"):
            _check(getattr(self, name) >= 0, f"{prefix}.{name}", f"weights must be >= 0, got {getattr(self, name)}")
        _check(0.0 <= self.ssim_weight <= 1.0, f"{prefix}.ssim_weight", f"must be in [0, 1], got {self.ssim_weight}")
        _check(self.automask_warmup >= 0, f"{prefix}.automask_warmup", f"must be >= 0 steps, got {self.automask_warmup}")
        _check(len(self.scales) > 0 and all(0 <= s <= 4 for s in self.scales)
               and len(set(self.scales)) == len(self.scales), f"{prefix}.scales",
               f"must be a non-empty list of distinct scales in 0..4, got {self.scales}")
        _check(len(self.feature_levels) > 0 and all(0 <= lv <= 4 for lv in self.feature_levels)
               and len(set(self.feature_levels)) == len(self.feature_levels), f"{prefix}.feature_levels",
               f"must be a non-empty list of distinct FeatureNet levels in 0..4, got {self.feature_levels}")
        _check(self.stage1_epochs >= 0 and self.stage1_steps >= 0, f"{prefix}.stage1_epochs",
               f"stage1_epochs and stage1_steps must be >= 0, got {self.stage1_epochs}, {self.stage1_steps}")
        if self.mode == "two_stage":
            _check(self.feature_metric > 0, f"{prefix}.feature_metric",
                   "mode=two_stage trains FeatureNet for the feature-metric loss of stage 2: must be > 0")
        if self.mode in ("featurenet", "two_stage"):
            _check(self.featurenet_reconstruction + self.featurenet_discriminative + self.featurenet_convergent > 0,
                   f"{prefix}.featurenet_reconstruction",
                   "mode=featurenet trains only FeatureNet: at least one featurenet_* weight must be > 0")
        else:
            _check(self.photometric + self.feature_metric > 0, f"{prefix}.photometric",
                   f"mode={self.mode} trains depth: photometric or feature_metric must be > 0")


@dataclass
class OptimConfig:
    lr: float = 1e-4  # Adam learning rate
    weight_decay: float = 0.0
    warmup_steps: int = 0  # linear warm-up steps
    decay_epochs: List[int] = field(default_factory=lambda: [20, 30])  # step decay milestones
    decay_gamma: float = 0.1  # step decay factor
    grad_clip: float = 0.0  # max grad norm (0 = off)
    schedule: str = "step"  # fmdepth.engine.schedule.SCHEDULES: step (decay_epochs) | cosine (over the budget)
    final_lr_factor: float = 0.05  # cosine: the learning rate at the end of the budget, times lr

    def validate(self, prefix: str) -> None:
        _check(self.lr > 0, f"{prefix}.lr", f"must be > 0, got {self.lr}")
        _check(self.weight_decay >= 0, f"{prefix}.weight_decay", "must be >= 0")
        _check(self.warmup_steps >= 0, f"{prefix}.warmup_steps", "must be >= 0")
        _check(0 < self.decay_gamma <= 1, f"{prefix}.decay_gamma", "must be in (0, 1]")
        _check(self.grad_clip >= 0, f"{prefix}.grad_clip", "must be >= 0")
        _check(0 < self.final_lr_factor <= 1, f"{prefix}.final_lr_factor", "must be in (0, 1]")
        _check(all(m > 0 for m in self.decay_epochs), f"{prefix}.decay_epochs",
               f"milestones must be positive epochs, got {self.decay_epochs}")
        _check(list(self.decay_epochs) == sorted(self.decay_epochs), f"{prefix}.decay_epochs",
               f"milestones must be increasing, got {self.decay_epochs}")


@dataclass
class TrainConfig:
    epochs: int = 40  # passes over the training split
    max_steps: int = 0  # stop after this many optimizer steps (0 = no limit)
    max_minutes: float = 0.0  # stop after this wall-clock budget (0 = no limit)
    batch_size: int = 12  # per process
    amp: str = "none"  # none | bf16 | fp16 (mixed precision where the device supports it)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 50  # steps between scalar logs
    image_every: int = 500  # steps between TensorBoard image logs
    val_every: int = 0  # steps between validations (0 = once per epoch)
    ckpt_every: int = 0  # steps between last.pt checkpoints (0 = once per epoch)
    max_bad_steps: int = 10  # consecutive non-finite losses before stopping
    val_batch_size: int = 0  # validation batch size (0 = train.batch_size)
    deterministic: bool = False  # cuDNN deterministic kernels (slower on GPU)
    ddp_find_unused: bool = True  # DDP find_unused_parameters (needed when some nets skip a step)

    def validate(self, prefix: str) -> None:
        _check(self.epochs > 0, f"{prefix}.epochs", "must be > 0")
        _check(self.log_every > 0, f"{prefix}.log_every", "must be > 0")
        for k in ("image_every", "val_every", "ckpt_every", "val_batch_size"):
            _check(getattr(self, k) >= 0, f"{prefix}.{k}", f"must be >= 0, got {getattr(self, k)}")
        _check(self.device in ("auto", "cpu", "cuda") or
               (self.device.startswith("cuda:") and self.device[5:].isdigit()),
               f"{prefix}.device", f"must be auto, cpu, cuda or cuda:N, got '{self.device}'")
        _check(self.max_steps >= 0, f"{prefix}.max_steps", "must be >= 0")
        _check(self.max_minutes >= 0, f"{prefix}.max_minutes", "must be >= 0")
        _check(self.batch_size > 0, f"{prefix}.batch_size", "must be > 0")
        _check(self.amp in ("none", "bf16", "fp16"), f"{prefix}.amp", "must be none, bf16 or fp16")
        _check(self.max_bad_steps > 0, f"{prefix}.max_bad_steps", "must be > 0")


@dataclass
class RegistrationConfig:
    """Learned registration (owned by the registration system, fmdepth/models/registration.py).

    Data: ``data.dataset: registration_pairs`` with ``data.path`` a pair folder
    (fixed/, moving/, optional landmarks_*/ and flow/), or ``fixed_video``/``moving_video``
    (two videos or frame folders), or nothing: synthetic multimodal pairs from scikit-image
    images. Images are resized to ``data.height`` x ``data.width``.
    """

    method: str = "deformable"  # a name of fmdepth.registration.METHODS: affine | deformable | translation (NeMAR)
    similarity: str = "mi"  # a name of fmdepth.losses.similarity.SIMILARITIES (affine / deformable)
    diffeomorphic: bool = False  # deformable: predict a stationary velocity, integrate by scaling and squaring
    integration_steps: int = 7  # scaling-and-squaring steps
    unet_depth: int = 4  # U-Net down-sampling levels
    unet_width: int = 16  # U-Net base width
    affine_width: int = 16  # affine regressor base width
    input_scale: float = 1.0  # networks see images resized by this factor; fields are upsampled back
    smoothness: float = 0.05  # weight of the flow gradient smoothness (deformable)
    supervised: float = 0.0  # weight of the end-point error to a known true flow (synthetic pairs only)
    similarity_weight: float = 1.0  # deformable: weight of the similarity (0 with supervised > 0 = EPE only)
    input_norm: bool = False  # deformable / translation: standardise each flow-network input image (zero mean, unit std)
    input_features: str = "intensity"  # deformable / translation: a name of fmdepth.models.registration.INPUT_FEATURES (intensity | orientation: + sign-invariant edge orientation)
    passes: int = 1  # deformable: recursive cascade, the U-Net re-applied to the warped moving image (1-4)
    refine_scale: float = 1.0  # deformable: passes after the first see input_scale * refine_scale (<= 1; coarse to fine)
    cascade_from_step: int = 0  # deformable: training runs the first pass alone before this step, then all passes
    mi_bins: int = 32  # mutual-information histogram bins
    mi_samples: int = 0  # MI on this many random pixels per image (0 = all pixels)
    ncc_window: int = 9  # local NCC window
    translator: str = "resnet"  # NeMAR translator, a name of fmdepth.models.registration.TRANSLATORS: resnet (context, instance norm) | local (5x5, intensity response)
    translator_width: int = 32  # NeMAR translator base width
    translator_blocks: int = 4  # NeMAR translator residual blocks (resnet) / 1x1 layers (local)
    discriminator_width: int = 64  # NeMAR PatchGAN base width
    l1_weight: float = 1.0  # NeMAR L1 of both paths T(R(A)), R(T(A)) against B
    gan_weight: float = 0.05  # NeMAR conditional GAN (generator) weight
    bilateral_weight: float = 0.1  # NeMAR bilateral smoothness of the flow
    bilateral_alpha: float = 10.0  # NeMAR bilateral edge sensitivity
    fixed_video: str = ""  # train on two aligned-in-time videos / frame folders: the fixed one ...
    moving_video: str = ""  # ... and the moving one
    augment_rms: float = 0.0  # pair folders / videos: each training fixed image through a fresh random warp of this RMS (px) + <= 4 deg, 4 %, 2 % shift (0 = off)
    augment_flip: bool = False  # pair folders / videos: each training pair in a random one of its 8 flips / transposes (both images alike)
    synthetic_pairs: int = 512  # training pairs synthesised on the fly when no data is given
    val_pairs: int = 16  # validation pairs (synthetic, or held out of the pair folder)
    synthetic_rms: float = 4.0  # RMS (pixels at data.height) of the synthetic smooth deformation
    synthetic_affine: bool = False  # add a random affine to synthetic pairs
    synthetic_generator: str = "scipy"  # training pairs: scipy = make_pair (landmarks, affine; the name is kept for old configs) | torch (fast, no affine/landmarks)
    modalities: List[str] = field(default_factory=lambda: ["remap", "edges"])  # synthetic modality pairs: names of fmdepth.data.modalities.MODALITIES

    def validate(self, prefix: str) -> None:
        _check(1 <= self.integration_steps <= 20, f"{prefix}.integration_steps", "must be in [1, 20]")
        _check(1 <= self.unet_depth <= 7, f"{prefix}.unet_depth", "must be in [1, 7]")
        for k in ("unet_width", "affine_width", "translator_width", "discriminator_width", "mi_bins",
                  "synthetic_pairs"):
            _check(getattr(self, k) > 0, f"{prefix}.{k}", "must be > 0")
        _check(self.translator_blocks >= 0, f"{prefix}.translator_blocks", "must be >= 0")
        _check(0 < self.input_scale <= 1, f"{prefix}.input_scale", "must be in (0, 1]")
        _check(self.ncc_window >= 3 and self.ncc_window % 2 == 1, f"{prefix}.ncc_window", "must be odd and >= 3")
        for k in ("smoothness", "supervised", "l1_weight", "gan_weight", "bilateral_weight", "bilateral_alpha",
                  "synthetic_rms", "mi_samples", "val_pairs", "similarity_weight", "augment_rms"):
            _check(getattr(self, k) >= 0, f"{prefix}.{k}", "must be >= 0")
        _check(bool(self.fixed_video) == bool(self.moving_video), f"{prefix}.fixed_video",
               "fixed_video and moving_video must be given together")
        _check(1 <= self.passes <= 4, f"{prefix}.passes", "must be in [1, 4]")
        _check(self.refine_scale >= 1, f"{prefix}.refine_scale", "must be >= 1")
        _check(self.cascade_from_step >= 0, f"{prefix}.cascade_from_step", "must be >= 0")
        _check(self.input_features in ("intensity", "orientation"), f"{prefix}.input_features",
               f"must be intensity or orientation, got '{self.input_features}'")
        _check(self.synthetic_generator in ("scipy", "torch"), f"{prefix}.synthetic_generator",
               f"must be scipy or torch, got '{self.synthetic_generator}'")
        _check(self.synthetic_generator != "torch" or not self.synthetic_affine, f"{prefix}.synthetic_affine",
               "is not available with synthetic_generator: torch")


@dataclass
class SemanticConfig:
    """Joint semantic alignment + landmark detection (``fmdepth.tasks.semantic``; image names: ``fmdepth.data.semantic``)."""

    num_landmarks: int = 10  # K landmark heatmaps
    trunk_layers: int = 18  # ResNet depth of the shared feature extractor (18/34/50/101/152)
    pretrained: str = "none"  # trunk init: none | imagenet (torchvision download) | path to a ResNet state_dict
    corr_radius: int = 3  # correlation-volume displacement radius, in stride-8 feature cells
    refine_radius: int = 2  # coarse-to-fine refinement: local correlation radius, in cells of each finer stride
    finest_stride: int = 4  # last stride the flow is refined at (8: stride-8 estimate only, 4, 2: ~2x slower steps)
    affine_prior: bool = True  # weighted least-squares affine fit of the stride-8 flow, residual regressed on it
    train_images: List[str] = field(default_factory=lambda: [
        "astronaut", "chelsea", "coffee", "immunohistochemistry", "hubble_deep_field", "camera", "coins",
        "moon", "clock", "brick", "gravel", "grass", "colorwheel"])  # skimage.data images warped for training
    val_images: List[str] = field(default_factory=lambda: [
        "rocket", "cell", "page", "text", "retina"])  # held-out skimage.data images for validation pairs (not "cat" = "chelsea")
    real_pairs: str = ""  # folder with pairs.txt (real pairs, optional keypoints): train on these instead
    init_checkpoint: str = ""  # start from the 'semantic' weights of this checkpoint (e.g. the synthetic stage's best.pt)
    train_pairs: int = 2000  # synthetic pairs per epoch (generated on the fly from (seed, index))
    val_pairs: int = 128  # held-out synthetic pairs for validation (PCK)
    num_keypoints: int = 20  # keypoints per pair for PCK
    max_rotation: float = 20.0  # random warp: rotation range (degrees)
    max_scale: float = 1.2  # random warp: scale in [1/max_scale, max_scale]
    max_translation: float = 0.1  # random warp: shift up to this fraction of the size
    deform: float = 2.0  # random warp: std (pixels) of the smooth deformation
    photometric_change: float = 0.2  # strength of the random gain/offset/gamma applied to image A
    flow_weight: float = 1.0  # Laplace NLL of the flow error (synthetic pairs: true flow known)
    coarse_flow_weight: float = 0.5  # end-point error of each level's coarse flow (synthetic pairs)
    photometric_weight: float = 0.0  # L1 of A vs B warped by the predicted flow (use for real pairs)
    equivariance_weight: float = 1.0  # landmarks of A carried by the true warp land on those of B
    joint_weight: float = 0.1  # landmarks of A carried by the predicted field land on those of B (uncertainty-weighted)
    concentration_weight: float = 0.1  # spatial variance of each heatmap
    separation_weight: float = 1.0  # hinge on landmark pairs closer than separation_margin
    separation_margin: float = 0.1  # in units of max(H, W)
    pck_alpha: float = 0.05  # PCK threshold alpha (x max(H, W)) selecting best.pt

    def validate(self, prefix: str) -> None:
        _check(self.num_landmarks > 0, f"{prefix}.num_landmarks", "must be > 0")
        _check(self.trunk_layers in (18, 34, 50, 101, 152), f"{prefix}.trunk_layers",
               f"must be one of 18, 34, 50, 101, 152, got {self.trunk_layers}")
        _check(bool(self.pretrained), f"{prefix}.pretrained", "must be 'none', 'imagenet' or a path")
        _check(self.corr_radius >= 1, f"{prefix}.corr_radius", "must be >= 1")
        _check(self.refine_radius >= 1, f"{prefix}.refine_radius", "must be >= 1")
        _check(self.finest_stride in (2, 4, 8), f"{prefix}.finest_stride", f"must be 2, 4 or 8, got {self.finest_stride}")
        _check(self.real_pairs != "REQUIRED", f"{prefix}.real_pairs",
               "set it to the folder holding pairs.txt (--set semantic.real_pairs=DIR)")
        _check(len(self.train_images) > 0 or bool(self.real_pairs), f"{prefix}.train_images",
               "need at least one skimage.data image name (or semantic.real_pairs)")
        for k in ("train_pairs", "val_pairs", "num_keypoints"):
            _check(getattr(self, k) > 0, f"{prefix}.{k}", f"must be > 0, got {getattr(self, k)}")
        _check(self.max_scale >= 1.0, f"{prefix}.max_scale", f"must be >= 1, got {self.max_scale}")
        for k in ("max_rotation", "max_translation", "deform", "photometric_change", "flow_weight",
                  "coarse_flow_weight", "photometric_weight", "equivariance_weight", "joint_weight",
                  "concentration_weight", "separation_weight", "separation_margin"):
            _check(getattr(self, k) >= 0, f"{prefix}.{k}", f"must be >= 0, got {getattr(self, k)}")
        _check(self.photometric_change < 1.0, f"{prefix}.photometric_change", "must be < 1")
        _check(0 < self.pck_alpha < 1, f"{prefix}.pck_alpha", f"must be in (0, 1), got {self.pck_alpha}")


TASKS = ("depth", "registration", "semantic")


@dataclass
class Config:
    task: str = "depth"  # depth | registration | semantic: which system `fmdepth train` builds
    seed: int = 0  # global seed (python, numpy, torch, data order)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    semantic: SemanticConfig = field(default_factory=SemanticConfig)

    def validate(self, prefix: str = "") -> None:
        _check(self.task in TASKS, "task", f"must be one of {', '.join(TASKS)}, got '{self.task}'")


# ------------------------------------------------------------------------------------ machinery
def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; ints are accepted where floats are."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin is typing.Union:  # Optional[X]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if origin in (list, List):
        (inner,) = typing.get_args(tp) or (Any,)
        if isinstance(value, tuple):
            value = list(value)
        _check(isinstance(value, list), key, f"expected a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        _check(isinstance(value, dict), key, f"expected a mapping, got {type(value).__name__}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, dict), key, f"expected a mapping (section), got {value!r}")
        return _from_dict(tp, value, key)
    if tp is bool:
        _check(isinstance(value, bool), key, f"expected true/false, got {value!r}")
        return value
    if tp is int:
        _check(isinstance(value, int) and not isinstance(value, bool), key,
               f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML (YAML 1.1) reads "1e-4" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        _check(isinstance(value, (int, float)) and not isinstance(value, bool), key,
               f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        _check(isinstance(value, str), key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for config key '{key}'")


def _from_dict(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else key
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(f"unknown config key '{full}'{hint}; known keys here: {', '.join(names)}")
    kwargs = {}
    for name in names:
        if name in data:
            full = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _coerce(data[name], hints[name], full)
    return cls(**kwargs)


def _validate(obj, prefix: str = "") -> None:
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            _validate(value, f"{prefix}.{f.name}" if prefix else f.name)
    if hasattr(obj, "validate"):
        obj.validate(prefix)


def config_from_dict(data: Optional[dict]) -> Config:
    """Build and validate a :class:`Config` from a (possibly partial) nested mapping."""
    cfg = _from_dict(Config, data or {})
    _validate(cfg)
    return cfg


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def apply_overrides(data: dict, overrides: List[str]) -> dict:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        _check(bool(key), item, "empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config key '{key}': cannot parse value {raw!r}: {exc}") from exc
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            _check(isinstance(node, dict), key, f"'{part}' is not a section")
        node[parts[-1]] = value
    return data


def load_config(path: Optional[str] = None, overrides: Optional[List[str]] = None) -> Config:
    """Read a YAML file (may be None: defaults), apply dotted overrides, validate.

    Raises:
        FileNotFoundError: the file does not exist.
        ConfigError: unknown key, wrong type or impossible value (message names the key).
    """
    data: dict = {}
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path, encoding="utf-8") as fh:
            try:
                data = yaml.safe_load(fh) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    apply_overrides(data, overrides or [])
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}" if path else str(exc)) from None


def save_config(cfg, path: str) -> None:
    """Write the fully resolved config as YAML (atomically)."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config_to_dict(cfg), fh, sort_keys=False)
    os.replace(tmp, path)
