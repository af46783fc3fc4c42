"""Learned registration systems: trainable networks + geometry + losses (no file I/O).

Conventions (as everywhere in fmdepth): images (B, C, H, W) float in [0, 1]; a flow is
(B, 2, H, W) in pixels on the **fixed** grid, ``flow[:, 0]`` = dx, and the registered image is
``warped(p) = moving(p + flow(p))`` (:func:`fmdepth.geometry.flow_warp`). Affines are pixel
affines mapping fixed pixels to moving pixels (:func:`fmdepth.geometry.affine_warp`).

:class:`AffineRegistration`, :class:`DeformableRegistration`, :class:`TranslationRegistration`
are trainable systems (``fmdepth train --config configs/registration_*.yaml``) following
:class:`fmdepth.core.system.System`; their :meth:`~LearnedRegistration.register` is fast
inference. The per-pair optimiser is :func:`fmdepth.registration.register_pair`; a checkpoint is
read by :func:`fmdepth.tasks.registration.load_registration_checkpoint`.

Similarities (:class:`fmdepth.losses.Similarity`, lower = better): ``mse``, ``ncc``, ``mi``,
``ngf``, ``mind``, ``feature`` (L1 between per-pixel normalised features of a FeatureNet encoder;
with no weights given the encoder is randomly initialised, which behaves like a bank of random
local filters).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from fmdepth.core.system import StepOutput
from fmdepth.geometry import (DIHEDRAL, affine_to_flow, affine_warp, check_image_pair, dihedral_image, flow_warp,
                              integrate_velocity, normalized_affine_to_pixel, resize_flow, resize_image,
                              undo_dihedral_flow)
from fmdepth.losses import (Similarity, bilateral_smoothness, discriminator_loss, flow_smoothness, generator_loss,
                            to_gray)
from fmdepth.metrics.registration import RegistrationResult
from fmdepth.networks.registration import (AffineRegressor, LocalTranslator, PatchDiscriminator, ResnetTranslator,
                                           UNetFlow)


@dataclass
class FlowPrediction:
    """What :meth:`LearnedRegistration.predict_flow` returns, for every method.

    Attributes:
        flow: (B, 2, H, W) pixels on the fixed grid at the input resolution.
        flow_lo: (B, 2, h, w) the field at the network's resolution (dense methods) or None.
        affine: (B, 3, 3) pixel affine fixed -> moving at the input resolution (affine) or None.
        theta: (B, 2, 3) the regressor's normalised affine (affine) or None.
    """

    flow: torch.Tensor
    flow_lo: Optional[torch.Tensor] = None
    affine: Optional[torch.Tensor] = None
    theta: Optional[torch.Tensor] = None


def _vis(x: torch.Tensor) -> torch.Tensor:
    """First sample of a (B, C, H, W) image batch as a (3, H, W) picture in [0, 1]."""
    x = x[0].detach().float().clamp(0, 1)
    return x.expand(3, -1, -1) if x.shape[0] == 1 else x[:3]


def _flow_vis(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) flow -> (3, H, W) picture: dx in red, dy in green, centred on 0.5."""
    f = flow[0].detach().float()
    s = f.abs().max().clamp_min(1e-6)
    return torch.cat([0.5 + 0.5 * f / s, torch.full_like(f[:1], 0.5)], 0)


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Per image and channel: zero mean, unit standard deviation (floored at 1e-3), (B, C, H, W)."""
    mu = x.mean(dim=(2, 3), keepdim=True)
    sd = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-3)
    return (x - mu) / sd


INPUT_FEATURES = ("intensity", "orientation")
TRANSLATORS = ("resnet", "local")  # NeMAR translators (registration.translator)


def orientation_features(x: torch.Tensor, eps: float = 0.05) -> torch.Tensor:
    """Edge orientation in the doubled-angle form, invariant to the sign of the gradient, (B, 2, H, W).

    ``(gx^2 - gy^2, 2 gx gy) / (|g|^2 + eps^2)`` with central differences: ``|g| >> eps`` gives a
    unit vector ``(cos 2a, sin 2a)`` of the gradient angle ``a``, flat regions ~0. Any pointwise
    intensity map ``f`` (monotonic or not) gives ``grad f(I) = f'(I) grad I``, parallel or
    anti-parallel, hence the same features (the input-space counterpart of NGF).
    x: (B, 1, H, W) grey images.
    """
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = 0.5 * (xp[..., 1:-1, 2:] - xp[..., 1:-1, :-2])
    gy = 0.5 * (xp[..., 2:, 1:-1] - xp[..., :-2, 1:-1])
    n = gx * gx + gy * gy + eps * eps
    return torch.cat([(gx * gx - gy * gy) / n, 2 * gx * gy / n], dim=1)


def network_input(x: torch.Tensor, features: str = "intensity", norm: bool = False) -> torch.Tensor:
    """What a flow network sees of one grey image (B, 1, H, W): ``[intensity]`` or, with
    ``features="orientation"``, ``[intensity, cos 2a, sin 2a]`` (:func:`orientation_features`);
    ``norm`` standardises the intensity channel (:func:`_standardise`)."""
    if features not in INPUT_FEATURES:
        raise ValueError(f"input_features: expected one of {', '.join(INPUT_FEATURES)}, got {features!r}")
    if features == "orientation":
        x = torch.cat([x, orientation_features(x)], 1)
    if norm:
        x = torch.cat([_standardise(x[:, :1]), x[:, 1:]], 1)
    return x


class LearnedRegistration(nn.Module):
    """Base of the learned systems (:class:`fmdepth.core.system.System` protocol + fast inference).

    Networks see grey images resized by ``input_scale``; fields are predicted at that resolution
    and resampled to the input resolution (:func:`fmdepth.geometry.resize_flow`).
    """

    method = "base"

    def __init__(self, similarity: str = "mi", input_scale: float = 1.0, supervised: float = 0.0,
                 mi_bins: int = 32, ncc_window: int = 9, mi_samples: int = 0,
                 feature_encoder: Optional[nn.Module] = None) -> None:
        super().__init__()
        if not 0 < input_scale <= 1:
            raise ValueError(f"input_scale: must be in (0, 1], got {input_scale}")
        self.input_scale, self.supervised = float(input_scale), float(supervised)
        if similarity == "feature" and feature_encoder is None:  # a randomly initialised FeatureNet-18
            from fmdepth.networks import FeatureNet

            feature_encoder = FeatureNet(num_layers=18, pretrained="none")
        self.similarity = Similarity(similarity, ncc_window=ncc_window, mi_bins=mi_bins,
                                     feature_encoder=feature_encoder, mi_samples=mi_samples)

    def _net_size(self, h: int, w: int) -> Tuple[int, int]:
        return max(8, int(round(h * self.input_scale))), max(8, int(round(w * self.input_scale)))

    def predict_flow(self, fixed: torch.Tensor, moving: torch.Tensor) -> FlowPrediction:
        """fixed, moving: (B, 1, H, W) grey -> :class:`FlowPrediction` (``flow`` (B, 2, H, W) + method extras)."""
        raise NotImplementedError

    @torch.no_grad()
    def register(self, fixed: torch.Tensor, moving: torch.Tensor, flip_average: bool = False) -> RegistrationResult:
        """Fast inference: fixed (B, C, H, W), moving (B, C', H, W) -> flow + warped moving (all channels).

        ``flip_average``: the mean of the flows predicted on the pair in each of its 8 orientations
        (4 unless square; :data:`fmdepth.geometry.DIHEDRAL`), each mapped back to the pair
        (:func:`fmdepth.geometry.undo_dihedral_flow`), at 8x the cost. For models trained with
        ``registration.augment_flip``, which saw every orientation; the result has no affine.
        """
        check_image_pair(fixed, moving)
        t0 = time.perf_counter()
        fg, mg = to_gray(fixed), to_gray(moving)
        if not flip_average:
            out = self.predict_flow(fg, mg)
            flow, affine = out.flow, out.affine
        else:
            square = fg.shape[-1] == fg.shape[-2]
            orientations = [o for o in DIHEDRAL if square or not o[2]]
            flow = sum(undo_dihedral_flow(self.predict_flow(dihedral_image(fg, *o), dihedral_image(mg, *o)).flow, *o)
                       for o in orientations) / len(orientations)
            affine = None
        warped, _ = flow_warp(moving, flow)
        return RegistrationResult(flow=flow, warped=warped, affine=affine, seconds=time.perf_counter() - t0)

    def _supervised_term(self, flow: torch.Tensor, batch) -> Optional[torch.Tensor]:
        if self.supervised > 0 and getattr(batch, "flow", None) is not None:
            return torch.sqrt(((flow - batch.flow) ** 2).sum(1) + 1e-6).mean()
        return None

    def parameter_groups(self) -> List[dict]:
        return [{"params": [p for p in m.parameters() if p.requires_grad]} for m in self.trainable_models().values()]


class AffineRegistration(LearnedRegistration):
    """Learned affine registration: :class:`AffineRegressor` -> theta -> pixel affine -> warp."""

    method = "affine"

    def __init__(self, width: int = 16, **kwargs) -> None:
        super().__init__(**kwargs)
        self.net = AffineRegressor(2, width=width)

    def trainable_models(self) -> Dict[str, nn.Module]:
        return {"affine": self.net}

    def predict_flow(self, fixed: torch.Tensor, moving: torch.Tensor) -> FlowPrediction:
        check_image_pair(fixed, moving)
        H, W = fixed.shape[-2:]
        size = self._net_size(H, W)
        theta = self.net(resize_image(fixed, size), resize_image(moving, size))  # (B, 2, 3) normalised
        A = normalized_affine_to_pixel(theta, H, W)  # (B, 3, 3) full-resolution pixels
        return FlowPrediction(flow=affine_to_flow(A, H, W), affine=A, theta=theta)

    def training_step(self, batch, step: int, want_images: bool = False):
        fixed, moving = to_gray(batch.fixed), to_gray(batch.moving)
        out = self.predict_flow(fixed, moving)
        warped, valid = affine_warp(moving, out.affine)
        sim = self.similarity(fixed, warped, valid)
        loss, scalars = sim, {"similarity": float(sim.detach())}
        sup = self._supervised_term(out.flow, batch)
        if sup is not None:
            loss = loss + self.supervised * sup
            scalars["supervised_epe"] = float(sup.detach())
        images = {"fixed": _vis(fixed), "moving": _vis(moving), "warped": _vis(warped)} if want_images else {}
        return StepOutput(loss=loss, scalars=scalars, images=images)


class DeformableRegistration(LearnedRegistration):
    """Learned dense registration (VoxelMorph): U-Net -> displacement, or velocity + integration.

    Loss: ``similarity_weight * similarity(fixed, moving o flow) + smoothness * flow_smoothness(flow)``
    (+ optional ``supervised`` end-point error when the batch carries a true flow, e.g. synthetic
    pairs). ``input_norm`` standardises each network input image (zero mean, unit deviation), which
    takes the modalities' different brightness ranges off the network; ``input_features="orientation"``
    adds, per image, the sign-invariant edge orientation (:func:`orientation_features`), which
    makes pointwise intensity remaps (e.g. RGB vs infrared-like contrast) look alike to the network
    and speeds supervised training up several-fold on the benchmark pairs. ``passes > 1`` is a
    recursive cascade: the same U-Net is applied again to the moving image warped by the flow so
    far, and the residual flows are composed; ``refine_scale > 1`` runs the passes after the first
    at ``input_scale * refine_scale`` (coarse to fine: e.g. 64 px, then 128 px for a 256 px pair);
    training trains the cascade end to end (loss on the final composed flow), with the first pass
    alone before training step ``cascade_from_step``. ``similarity_weight=0`` with ``supervised > 0``
    trains on the end-point error alone (the similarity is then not computed, which saves its
    cost); batches without a true flow fall back to the similarity with weight 1, so the loss never
    silently loses its data term.
    """

    method = "deformable"

    def __init__(self, depth: int = 4, width: int = 16, diffeomorphic: bool = False, integration_steps: int = 7,
                 smoothness: float = 0.05, similarity_weight: float = 1.0, input_norm: bool = False,
                 input_features: str = "intensity", passes: int = 1, refine_scale: float = 1.0,
                 cascade_from_step: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        if not 1 <= passes <= 4:
            raise ValueError(f"passes: must be in [1, 4], got {passes}")
        if refine_scale < 1:
            raise ValueError(f"refine_scale: must be >= 1, got {refine_scale}")
        if cascade_from_step < 0:
            raise ValueError(f"cascade_from_step: must be >= 0, got {cascade_from_step}")
        self.passes, self.refine_scale, self.cascade_from_step = int(passes), float(refine_scale), int(cascade_from_step)
        if similarity_weight < 0:
            raise ValueError(f"similarity_weight: must be >= 0, got {similarity_weight}")
        if input_features not in INPUT_FEATURES:
            raise ValueError(f"input_features: expected one of {', '.join(INPUT_FEATURES)}, got {input_features!r}")
        self.input_features = input_features
        self.net = UNetFlow(2 if input_features == "intensity" else 6, depth=depth, width=width)
        self.diffeomorphic, self.integration_steps, self.smoothness = diffeomorphic, integration_steps, smoothness
        self.similarity_weight, self.input_norm = float(similarity_weight), bool(input_norm)

    def trainable_models(self) -> Dict[str, nn.Module]:
        return {"flow": self.net}

    def predict_flow(self, fixed: torch.Tensor, moving: torch.Tensor, passes: Optional[int] = None) -> FlowPrediction:
        """As :meth:`LearnedRegistration.predict_flow`; ``passes`` overrides the cascade length."""
        check_image_pair(fixed, moving)
        H, W = fixed.shape[-2:]
        flow_lo, inputs = None, {}
        for k, size in enumerate(self.pass_sizes(H, W, passes)):  # pass k > 0: the moving image warped by the flow so far
            if size not in inputs:
                inputs[size] = resize_image(fixed, size), resize_image(moving, size)
            f_lo, m_lo = inputs[size]
            if flow_lo is not None and tuple(flow_lo.shape[-2:]) != size:
                flow_lo = resize_flow(flow_lo, size)
            m_k = m_lo if flow_lo is None else flow_warp(m_lo, flow_lo, padding_mode="border")[0]
            field_ = self.net(self._net_input(f_lo), self._net_input(m_k))  # (B, 2, h, w)
            step = integrate_velocity(field_, steps=self.integration_steps) if self.diffeomorphic else field_
            # compose: moving(p + s(p) + flow(p + s(p)))
            flow_lo = step if flow_lo is None else step + flow_warp(flow_lo, step, padding_mode="border")[0]
        return FlowPrediction(flow=resize_flow(flow_lo, (H, W)), flow_lo=flow_lo)

    def pass_sizes(self, h: int, w: int, passes: Optional[int] = None) -> List[Tuple[int, int]]:
        """Network input size of each pass: ``input_scale``, then ``input_scale * refine_scale`` (<= 1)."""
        s = min(1.0, self.input_scale * self.refine_scale)
        fine = (max(8, int(round(h * s))), max(8, int(round(w * s))))
        return [self._net_size(h, w)] + [fine] * ((self.passes if passes is None else passes) - 1)

    def _net_input(self, x: torch.Tensor) -> torch.Tensor:
        return network_input(x, self.input_features, self.input_norm)

    def training_step(self, batch, step: int, want_images: bool = False):
        fixed, moving = to_gray(batch.fixed), to_gray(batch.moving)
        # before cascade_from_step, training runs the first pass alone (it learns the coarse field first)
        out = self.predict_flow(fixed, moving, passes=1 if self.training and step < self.cascade_from_step else None)
        warped, valid = flow_warp(moving, out.flow)
        smooth = flow_smoothness(out.flow_lo)
        loss = self.smoothness * smooth
        scalars = {"smoothness": float(smooth.detach())}
        supervisable = self.supervised > 0 and getattr(batch, "flow", None) is not None
        # similarity_weight = 0 means 'end-point error only': without a true flow, fall back to weight 1
        sim_w = self.similarity_weight if (supervisable or self.similarity_weight > 0) else 1.0
        if sim_w > 0:
            sim = self.similarity(fixed, warped, valid)
            loss = loss + sim_w * sim
            scalars["similarity"] = float(sim.detach())
        sup = self._supervised_term(out.flow, batch)
        if sup is not None:
            loss = loss + self.supervised * sup
            scalars["supervised_epe"] = float(sup.detach())
        images = ({"fixed": _vis(fixed), "moving": _vis(moving), "warped": _vis(warped),
                   "flow": _flow_vis(out.flow)} if want_images else {})
        return StepOutput(loss=loss, scalars=scalars, images=images)


class TranslationRegistration(LearnedRegistration):
    """NeMAR: translation-based multimodal registration.

    A translator ``T`` maps the moving modality to the fixed one and a U-Net ``R`` predicts the
    flow. Both orders must reproduce the fixed image: ``T(R(moving))`` and ``R(T(moving))`` (L1
    over every fixed pixel, as NeMAR: warped samples from outside the moving image are 0 and
    count as errors, so ``R`` gains nothing by moving content out of view), a conditional
    PatchGAN ``D`` judges both outputs (conditioned on the moving image), and a bilateral
    smoothness term on the flow follows the edges of the registered moving image. Because the
    registration-first and translation-first paths must agree, ``T`` cannot absorb geometry.

    ``translator="local"`` (:class:`~fmdepth.networks.registration.LocalTranslator`, 5x5 receptive
    field, no normalisation) suits modalities related by an intensity response; ``"resnet"``
    (:class:`~fmdepth.networks.registration.ResnetTranslator`, NeMAR's CycleGAN-style generator
    with instance normalisation) translates with context. ``input_features`` / ``input_norm``
    choose what ``R`` sees of each image, as for :class:`DeformableRegistration` (``orientation``
    adds the sign-invariant edge orientation, the same for any pointwise intensity map).

    The engine runs one optimizer over :meth:`parameter_groups`; the GAN is trained in the same
    backward pass: the generator term evaluates ``D`` with *detached* parameters (no gradient to
    ``D``), the discriminator term sees detached fakes (no gradient to ``T``/``R``).
    """

    method = "translation"

    def __init__(self, depth: int = 4, width: int = 16, translator_width: int = 32, translator_blocks: int = 4,
                 discriminator_width: int = 64, l1_weight: float = 1.0, gan_weight: float = 0.05,
                 bilateral_weight: float = 0.1, bilateral_alpha: float = 10.0, gan_mode: str = "lsgan",
                 translator: str = "resnet", input_features: str = "intensity", input_norm: bool = False,
                 **kwargs) -> None:
        kwargs.setdefault("similarity", "mse")
        super().__init__(**kwargs)
        if translator not in TRANSLATORS:
            raise ValueError(f"translator: expected one of {', '.join(TRANSLATORS)}, got {translator!r}")
        if input_features not in INPUT_FEATURES:
            raise ValueError(f"input_features: expected one of {', '.join(INPUT_FEATURES)}, got {input_features!r}")
        self.translator_kind, self.input_features, self.input_norm = translator, input_features, bool(input_norm)
        self.translator = (LocalTranslator(1, 1, width=translator_width, num_layers=translator_blocks)
                           if translator == "local" else
                           ResnetTranslator(1, 1, width=translator_width, num_blocks=translator_blocks))
        self.net = UNetFlow(2 if input_features == "intensity" else 6, depth=depth, width=width)
        self.discriminator = PatchDiscriminator(2, width=discriminator_width)
        self.l1_weight, self.gan_weight = l1_weight, gan_weight
        self.bilateral_weight, self.bilateral_alpha, self.gan_mode = bilateral_weight, bilateral_alpha, gan_mode

    def trainable_models(self) -> Dict[str, nn.Module]:
        return {"translator": self.translator, "flow": self.net, "discriminator": self.discriminator}

    def predict_flow(self, fixed: torch.Tensor, moving: torch.Tensor) -> FlowPrediction:
        check_image_pair(fixed, moving)
        H, W = fixed.shape[-2:]
        size = self._net_size(H, W)
        flow_lo = self.net(network_input(resize_image(fixed, size), self.input_features, self.input_norm),
                           network_input(resize_image(moving, size), self.input_features, self.input_norm))
        return FlowPrediction(flow=resize_flow(flow_lo, (H, W)), flow_lo=flow_lo)

    def register(self, fixed: torch.Tensor, moving: torch.Tensor, flip_average: bool = False) -> RegistrationResult:
        """As :meth:`LearnedRegistration.register`, plus ``translated`` (B, 1, H, W) = T(warped moving)."""
        result = super().register(fixed, moving, flip_average=flip_average)
        with torch.no_grad():
            result.translated = self.translator(to_gray(result.warped))
        return result

    def _d_frozen(self, x: torch.Tensor) -> torch.Tensor:
        params = {k: v.detach() for k, v in self.discriminator.named_parameters()}
        buffers = dict(self.discriminator.named_buffers())
        return torch.func.functional_call(self.discriminator, {**params, **buffers}, (x,))

    def training_step(self, batch, step: int, want_images: bool = False):
        fixed, moving = to_gray(batch.fixed), to_gray(batch.moving)
        out = self.predict_flow(fixed, moving)
        flow = out.flow
        warped, _ = flow_warp(moving, flow)  # zeros outside the moving image
        reg_then_tr = self.translator(warped)  # T(R(A))
        tr_then_reg, _ = flow_warp(self.translator(moving), flow)  # R(T(A))
        l1 = (reg_then_tr - fixed).abs().mean() + (tr_then_reg - fixed).abs().mean()
        bil = bilateral_smoothness(flow, warped.detach(), alpha=self.bilateral_alpha)
        # generator: both outputs judged by the frozen discriminator; discriminator: real vs both detached fakes
        g_adv = generator_loss([self._d_frozen(torch.cat([moving, reg_then_tr], 1)),
                                self._d_frozen(torch.cat([moving, tr_then_reg], 1))], mode=self.gan_mode)
        d_loss = discriminator_loss(self.discriminator(torch.cat([moving, fixed], 1)),
                                    [self.discriminator(torch.cat([moving, reg_then_tr.detach()], 1)),
                                     self.discriminator(torch.cat([moving, tr_then_reg.detach()], 1))],
                                    mode=self.gan_mode)
        loss = self.l1_weight * l1 + self.gan_weight * g_adv + self.bilateral_weight * bil + d_loss
        scalars = {"l1_both_paths": float(l1.detach()), "gan_generator": float(g_adv.detach()),
                   "gan_discriminator": float(d_loss.detach()), "bilateral": float(bil.detach())}
        sup = self._supervised_term(flow, batch)
        if sup is not None:
            loss = loss + self.supervised * sup
            scalars["supervised_epe"] = float(sup.detach())
        images = ({"fixed": _vis(fixed), "moving": _vis(moving), "T_of_R": _vis(reg_then_tr),
                   "R_of_T": _vis(tr_then_reg), "flow": _flow_vis(flow)} if want_images else {})
        return StepOutput(loss=loss, scalars=scalars, images=images)


# the learned systems by ``registration.method``
SYSTEMS = {c.method: c for c in (AffineRegistration, DeformableRegistration, TranslationRegistration)}


def build_registration_system(cfg) -> LearnedRegistration:
    """Map a :class:`fmdepth.config.RegistrationConfig` (``cfg.registration``) onto a system.

    Accepts the whole :class:`fmdepth.config.Config` or just its ``registration`` section.
    """
    r = getattr(cfg, "registration", cfg)
    common = dict(input_scale=r.input_scale, supervised=r.supervised, mi_bins=r.mi_bins, ncc_window=r.ncc_window,
                  mi_samples=r.mi_samples)
    if r.method == "affine":
        return AffineRegistration(width=r.affine_width, similarity=r.similarity, **common)
    if r.method == "deformable":
        return DeformableRegistration(depth=r.unet_depth, width=r.unet_width, diffeomorphic=r.diffeomorphic,
                                      integration_steps=r.integration_steps, smoothness=r.smoothness,
                                      similarity_weight=r.similarity_weight, input_norm=r.input_norm,
                                      input_features=r.input_features, passes=r.passes,
                                      refine_scale=r.refine_scale, cascade_from_step=r.cascade_from_step,
                                      similarity=r.similarity, **common)
    if r.method == "translation":
        return TranslationRegistration(depth=r.unet_depth, width=r.unet_width, translator_width=r.translator_width,
                                       translator_blocks=r.translator_blocks,
                                       discriminator_width=r.discriminator_width, l1_weight=r.l1_weight,
                                       gan_weight=r.gan_weight, bilateral_weight=r.bilateral_weight,
                                       bilateral_alpha=r.bilateral_alpha, translator=r.translator,
                                       input_features=r.input_features, input_norm=r.input_norm, **common)
    raise ValueError(f"registration.method: unknown '{r.method}'; expected one of {', '.join(SYSTEMS)}")


