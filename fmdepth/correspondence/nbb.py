"""Neural Best-Buddies: sparse cross-domain correspondence on a VGG19 feature hierarchy.

Method (Aberman et al., "Neural Best-Buddies: Sparse Cross-Domain Correspondence", SIGGRAPH 2018):

1. Features of both images at relu5_1 ... relu1_1 (levels 5 ... 1; level ``l`` has stride
   ``2**(l-1)``).
2. At the coarsest level the whole feature maps form one search-region pair. At a finer level
   every pair ``(p, q)`` of the level above gives one region pair: the ``2r+2`` square around
   its 2x2 children ``2p .. 2p+1`` in A and ``2q .. 2q+1`` in B (``r`` = search radius: 2 at
   levels 5-3, 3 at levels 2-1, as in the authors' code; regions are shifted inside the map at
   the borders).
3. Common appearance: inside each region pair, every channel of each region is normalised to zero
   mean / unit std and re-scaled to the *averaged* std and shifted to the *averaged* mean of the
   two regions; then each feature vector is L2-normalised.
4. Similarity of two positions = patch cross-correlation: the mean cosine over a ``p x p`` patch
   (p = 3 at levels 5-3, 5 at levels 2-1). Best buddies = mutual nearest neighbours inside the
   region pair.
5. Pairs whose activation (channel-summed squared feature, min-max normalised to [0, 1] over the
   image) is below ``tau`` in either image are dropped; survivors are refined one level down.
6. At level 1 (full resolution) the pairs are clustered with k-means on their positions in A and
   the strongest pair (accumulated activation) of each cluster is kept: the top-k.

Vectorisation: all region pairs of a level are processed in one batch (chunked only to bound
memory). The per-pixel feature dot products of each region window pair are one batched matmul
``G``; the patch correlation is a sum of ``p*p`` shifted diagonal slices of ``G``. No Python loop
runs over pixels or pairs. :mod:`fmdepth.correspondence.reference` holds a literal per-pixel loop
implementation of the same matcher (tests check they agree; the bench measures the speed ratio).

Coordinates: points are ``(x, y)`` = (column, row) pixels of the input image, pixel centres at
integers (the :mod:`fmdepth.geometry` convention).
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from fmdepth.data.media import read_image, unit_range

ImageLike = Union[str, os.PathLike, torch.Tensor, np.ndarray]

NUM_LEVELS = 5
PATCH_SIZES = (5, 5, 3, 3, 3)  # per level 1..5 (index 0 = relu1_1)
SEARCH_RADII = (3, 3, 2, 2, 2)  # per level 1..5
# The smallest side NBB accepts: relu4_1 (stride 8) must hold one 6x6 search region.
MIN_IMAGE_SIZE = 48


@dataclass
class NBBResult:
    """Best-buddy pairs.

    Attributes:
        points_a: (N, 2) float32 (x, y) pixels in image A (the top-k pairs).
        points_b: (N, 2) float32 (x, y) pixels in image B.
        scores: (N,) accumulated normalised activation over the 5 levels (higher = stronger).
        all_points_a, all_points_b, all_scores: every level-1 pair before the top-k selection.
        pairs_per_level: number of pairs kept at each level, coarsest first.
    """

    points_a: torch.Tensor
    points_b: torch.Tensor
    scores: torch.Tensor
    all_points_a: torch.Tensor = field(repr=False, default=None)
    all_points_b: torch.Tensor = field(repr=False, default=None)
    all_scores: torch.Tensor = field(repr=False, default=None)
    pairs_per_level: List[int] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.points_a.shape[0])

    def to_dict(self) -> Dict:
        return {
            "points_a": self.points_a.tolist(),
            "points_b": self.points_b.tolist(),
            "scores": self.scores.tolist(),
            "pairs_per_level": list(self.pairs_per_level),
        }


# ------------------------------------------------------------------------------------- inputs
def load_image(image: ImageLike, name: str = "image") -> torch.Tensor:
    """A path, tensor or array -> (1, 3, H, W) float32 in [0, 1].

    Accepted: a file path, read by :func:`fmdepth.data.media.read_image` (its bit-depth rule:
    16-bit / 65535; grey stays one channel, RGBA and palette files come back as RGB); a tensor
    (3, H, W), (1, 3, H, W), (H, W), (1, H, W), (4, H, W) or (1, 4, H, W) in [0, 1]; a numpy array
    (H, W), (H, W, 3) or (H, W, 4), values by :func:`fmdepth.data.media.unit_range` (uint8 / 255,
    uint16 / 65535, floats in [0, 1] kept). Grayscale is replicated to three channels and an
    alpha channel is dropped; both are reported with a warning.
    """
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        try:
            arr = read_image(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{name}: image file not found: {path}") from None
        except ValueError as exc:
            raise ValueError(f"{name}: cannot read {path} as an image: {exc}") from None
        return load_image(torch.from_numpy(arr), f"{name} ({path})")
    if isinstance(image, np.ndarray):
        arr = unit_range(image)
        if arr.ndim == 3:
            arr = np.moveaxis(arr, -1, 0)  # (C, H, W)
        elif arr.ndim != 2:
            raise ValueError(f"{name}: expected an (H, W), (H, W, 3) or (H, W, 4) array, got {arr.shape}")
        return load_image(torch.from_numpy(np.ascontiguousarray(arr)), name)
    if not isinstance(image, torch.Tensor):
        raise ValueError(f"{name}: expected a path, tensor or numpy array, got {type(image).__name__}")
    x = image
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor in [0, 1], got dtype {x.dtype}")
    if x.dim() == 2:
        x = x[None]
    if x.dim() == 4:
        if x.shape[0] != 1:
            raise ValueError(f"{name}: expected a single image (1, 3, H, W), got batch {tuple(x.shape)}")
        x = x[0]
    if x.dim() != 3 or x.shape[0] not in (1, 3, 4):
        raise ValueError(f"{name}: expected shape (3, H, W) or (1, 3, H, W) (grayscale (1, H, W) and "
                         f"RGBA (4, H, W) are converted), got {tuple(image.shape)}")
    if x.shape[0] == 1:
        warnings.warn(f"{name}: grayscale image, replicated to 3 channels", UserWarning, stacklevel=2)
        x = x.expand(3, -1, -1)
    elif x.shape[0] == 4:
        warnings.warn(f"{name}: RGBA image, alpha channel dropped", UserWarning, stacklevel=2)
        x = x[:3]
    return x[None].float().contiguous()


def _check_size(img: torch.Tensor, name: str) -> None:
    H, W = img.shape[-2:]
    if min(H, W) < MIN_IMAGE_SIZE:
        raise ValueError(
            f"{name} is {H}x{W} pixels; Neural Best-Buddies needs at least {MIN_IMAGE_SIZE}x"
            f"{MIN_IMAGE_SIZE} (relu4_1 at 1/8 resolution must hold a 6x6 search region)")


@functools.lru_cache(maxsize=4)
def get_vgg19_features(pretrained: str = "none", seed: int = 0):
    """A (cached) frozen :class:`fmdepth.networks.vgg.VGG19Features` on the CPU."""
    from fmdepth.networks.vgg import VGG19Features

    return VGG19Features(pretrained=pretrained, seed=seed)


# --------------------------------------------------------------------------- the region matcher
def activation_map(feat: torch.Tensor) -> torch.Tensor:
    """Channel-summed squared activation, min-max normalised to [0, 1]: (C, H, W) -> (H, W)."""
    r = feat.pow(2).sum(0)
    lo, hi = r.min(), r.max()
    return (r - lo) / (hi - lo) if hi > lo else torch.zeros_like(r)


def common_appearance(win_a: torch.Tensor, win_b: torch.Tensor, core_a: torch.Tensor,
                      core_b: torch.Tensor, eps: float = 1e-5) -> Tuple[torch.Tensor, torch.Tensor]:
    """Map two region windows to their common appearance, then L2-normalise each feature vector.

    Args:
        win_a: (N, Pa, C) features of the region windows of A (region + patch margin).
        win_b: (N, Pb, C).
        core_a: (N, Qa, C) features of the regions themselves (statistics come from these).
        core_b: (N, Qb, C).

    Returns:
        (N, Pa, C), (N, Pb, C): ``(f - mean_x) / std_x * (std_a + std_b)/2 + (mean_a + mean_b)/2``
        per channel, then unit length per position.
    """
    mean_a, mean_b = core_a.mean(1, keepdim=True), core_b.mean(1, keepdim=True)  # (N, 1, C)
    std_a = core_a.std(1, unbiased=False, keepdim=True) + eps
    std_b = core_b.std(1, unbiased=False, keepdim=True) + eps
    mean, std = 0.5 * (mean_a + mean_b), 0.5 * (std_a + std_b)
    out = []
    for win, m, s in ((win_a, mean_a, std_a), (win_b, mean_b, std_b)):
        scale = std / s  # (f - m) / s * std + mean == f * scale + (mean - m * scale)
        f = torch.addcmul(mean - m * scale, win, scale)
        out.append(f * torch.rsqrt(f.pow(2).sum(-1, keepdim=True).clamp_min(1e-24)))
    return out[0], out[1]


def _gather_windows(flat: torch.Tensor, Wp: int, origins: torch.Tensor, win_h: int,
                    win_w: int) -> torch.Tensor:
    """(Hp*Wp, C) padded map (channels last), (N, 2) (y, x) window origins in padded coords
    -> (N, win_h*win_w, C)."""
    C = flat.shape[1]
    dev = flat.device
    iy = torch.arange(win_h, device=dev).view(1, win_h, 1)
    ix = torch.arange(win_w, device=dev).view(1, 1, win_w)
    idx = (origins[:, 0].view(-1, 1, 1) + iy) * Wp + (origins[:, 1].view(-1, 1, 1) + ix)  # (N, h, w)
    return flat[idx.reshape(-1)].view(origins.shape[0], win_h * win_w, C)


def match_regions(feat_a: torch.Tensor, feat_b: torch.Tensor, origins_a: torch.Tensor,
                  origins_b: torch.Tensor, size_a: Tuple[int, int], size_b: Tuple[int, int],
                  patch: int, chunk_elems: int = 1 << 24
                  ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours inside every region pair, all pairs at once.

    Args:
        feat_a: (C, Ha, Wa) features of A at one level; feat_b: (C, Hb, Wb).
        origins_a: (N, 2) long (y, x) top-left corner of each region in A (inside the map).
        origins_b: (N, 2) long, same for B.
        size_a: (h, w) of the regions in A; size_b: (h, w) in B.
        patch: odd patch side of the cross-correlation.
        chunk_elems: bound on the elements of one batched correlation (memory).

    Returns:
        region (M,) long index of the region pair, pos_a (M, 2) long (y, x) in A's map,
        pos_b (M, 2) long (y, x) in B's map, corr (M,) patch correlation (mean cosine) of the pair.
    """
    h = patch // 2
    pad_mode = "reflect" if min(feat_a.shape[-2:] + feat_b.shape[-2:]) > h else "replicate"
    pad_a = F.pad(feat_a[None], (h, h, h, h), mode=pad_mode)[0]
    pad_b = F.pad(feat_b[None], (h, h, h, h), mode=pad_mode)[0]
    Wpa, Wpb = pad_a.shape[-1], pad_b.shape[-1]
    flat_a = pad_a.reshape(pad_a.shape[0], -1).t().contiguous()  # (Hp*Wp, C): rows are gathered
    flat_b = pad_b.reshape(pad_b.shape[0], -1).t().contiguous()
    (sha, swa), (shb, swb) = size_a, size_b
    wha, wwa, whb, wwb = sha + 2 * h, swa + 2 * h, shb + 2 * h, swb + 2 * h
    N = origins_a.shape[0]
    per_region = wha * wwa * whb * wwb + sha * swa * shb * swb * 2
    step = max(1, chunk_elems // per_region)
    out_r, out_a, out_b, out_c = [], [], [], []
    for s in range(0, N, step):  # chunks of region pairs (memory bound), each fully batched
        oa, ob = origins_a[s:s + step], origins_b[s:s + step]
        n = oa.shape[0]
        win_a = _gather_windows(flat_a, Wpa, oa, wha, wwa)  # (n, wha*wwa, C); padded origin = origin
        win_b = _gather_windows(flat_b, Wpb, ob, whb, wwb)
        core_a = win_a.view(n, wha, wwa, -1)[:, h:h + sha, h:h + swa].reshape(n, sha * swa, -1)
        core_b = win_b.view(n, whb, wwb, -1)[:, h:h + shb, h:h + swb].reshape(n, shb * swb, -1)
        win_a, win_b = common_appearance(win_a, win_b, core_a, core_b)
        G = torch.bmm(win_a, win_b.transpose(1, 2)).view(n, wha, wwa, whb, wwb)  # per-pixel cosines
        # patch correlation = sum of the p*p shifted diagonals of G, done separably: over the
        # column offsets dx first (for every window row), then over the row offsets dy.
        cols = G[:, :, 0:swa, :, 0:swb].clone()  # (n, wha, swa, whb, swb)
        for dx in range(1, patch):
            cols += G[:, :, dx:dx + swa, :, dx:dx + swb]
        corr = cols[:, 0:sha, :, 0:shb, :].clone()  # (n, sha, swa, shb, swb)
        for dy in range(1, patch):
            corr += cols[:, dy:dy + sha, :, dy:dy + shb, :]
        corr = corr.reshape(n, sha * swa, shb * swb) / (patch * patch)
        a2b = corr.argmax(2)  # (n, Pa)
        b2a = corr.argmax(1)  # (n, Pb)
        ia = torch.arange(sha * swa, device=corr.device).expand(n, -1)
        mutual = b2a.gather(1, a2b) == ia  # (n, Pa)
        r_idx, a_idx = mutual.nonzero(as_tuple=True)
        b_idx = a2b[r_idx, a_idx]
        out_r.append(r_idx + s)
        out_a.append(torch.stack([oa[r_idx, 0] + a_idx // swa, oa[r_idx, 1] + a_idx % swa], 1))
        out_b.append(torch.stack([ob[r_idx, 0] + b_idx // swb, ob[r_idx, 1] + b_idx % swb], 1))
        out_c.append(corr[r_idx, a_idx, b_idx])
    if not out_r:
        e = origins_a.new_zeros(0)
        return e, origins_a.new_zeros(0, 2), origins_a.new_zeros(0, 2), feat_a.new_zeros(0)
    return torch.cat(out_r), torch.cat(out_a), torch.cat(out_b), torch.cat(out_c)


def child_region_origins(pos: torch.Tensor, radius: int, map_hw: Tuple[int, int]) -> torch.Tensor:
    """(N, 2) (y, x) cells of the coarser level -> (N, 2) origins of the ``2r+2`` regions around
    their 2x2 children one level finer, shifted to lie inside a map of size ``map_hw``."""
    size = 2 * radius + 2
    hi = pos.new_tensor([map_hw[0] - size, map_hw[1] - size]).clamp(min=0)
    return torch.minimum(torch.clamp(2 * pos - radius, min=0), hi)


def _one_to_one(pos_a: torch.Tensor, pos_b: torch.Tensor, key: torch.Tensor, width_a: int,
                width_b: int) -> torch.Tensor:
    """Indices keeping, for every cell of A and then of B, only its pair with the largest ``key``."""
    keep = torch.arange(pos_a.shape[0], device=pos_a.device)
    for pos, width in ((pos_a, width_a), (pos_b, width_b)):
        order = torch.argsort(key[keep], descending=True, stable=True)
        k = keep[order]
        cell = pos[k, 0] * width + pos[k, 1]
        uniq, inverse = torch.unique(cell, return_inverse=True)
        first = torch.full((uniq.shape[0],), k.shape[0], dtype=torch.long, device=pos.device)
        first.scatter_reduce_(0, inverse, torch.arange(k.shape[0], device=pos.device), reduce="amin")
        keep = k[first]
    return keep


# -------------------------------------------------------------------------------- the method
def find_best_buddies(image_a: ImageLike, image_b: ImageLike, k: int = 10, tau: float = 0.05,
                      pretrained: str = "none", seed: int = 0, max_pairs: int = 1000,
                      device: Optional[Union[str, torch.device]] = None, extractor=None,
                      num_levels: int = NUM_LEVELS) -> NBBResult:
    """Neural Best-Buddies between two images.

    Args:
        image_a: (3, H, W) or (1, 3, H, W) float in [0, 1], a path, or a numpy image.
            Grayscale (replicated) and RGBA (alpha dropped) are converted with a warning.
        image_b: same, any size >= 48x48.
        k: number of pairs returned (k-means clusters over A's positions, strongest per
            cluster). If fewer pairs are found, a warning says so and all are returned.
        tau: activation threshold in [0, 1] (both images) for keeping a pair at every level.
        pretrained: VGG19 weights: ``"imagenet"`` (torchvision download; clear error offline),
            a local state_dict path, or ``"none"`` (seeded random features, ``seed``).
        seed: seed of the random VGG19 (``pretrained="none"``) and of k-means.
        max_pairs: at most this many pairs (highest accumulated activation) are refined at each
            level; bounds the run time on near-identical images.
        device: where to compute (default: image_a's device for tensors, else CPU).
        extractor: a ready VGG19Features (overrides ``pretrained``/``seed``).
        num_levels: start at relu{num_levels}_1 (5 = the full hierarchy).

    Returns:
        NBBResult with points_a (k', 2), points_b (k', 2) in (x, y) pixels and scores (k',).

    Example:
        >>> img = torch.rand(3, 64, 64)
        >>> res = find_best_buddies(img, img, k=5)
        >>> res.points_a.shape
        torch.Size([5, 2])
    """
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not 0.0 <= tau < 1.0:
        raise ValueError(f"tau must be in [0, 1), got {tau}")
    if not 1 <= num_levels <= NUM_LEVELS:
        raise ValueError(f"num_levels must be in [1, {NUM_LEVELS}], got {num_levels}")
    if device is None:
        device = image_a.device if isinstance(image_a, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    img_a = load_image(image_a, "image_a").to(device)
    img_b = load_image(image_b, "image_b").to(device)
    _check_size(img_a, "image_a")
    _check_size(img_b, "image_b")
    net = extractor if extractor is not None else get_vgg19_features(pretrained, seed)
    net = net.to(device)
    with torch.no_grad():
        if img_a.shape == img_b.shape:
            feats = net(torch.cat([img_a, img_b]))
            feats_a, feats_b = [f[0] for f in feats], [f[1] for f in feats]
        else:
            feats_a, feats_b = [f[0] for f in net(img_a)], [f[0] for f in net(img_b)]
        return _best_buddies_from_features(feats_a, feats_b, k, tau, seed, max_pairs, num_levels)


def _best_buddies_from_features(feats_a: Sequence[torch.Tensor], feats_b: Sequence[torch.Tensor],
                                k: int, tau: float, seed: int, max_pairs: int,
                                num_levels: int) -> NBBResult:
    top = num_levels - 1
    fa, fb = feats_a[top], feats_b[top]
    dev = fa.device
    zero = torch.zeros(1, 2, dtype=torch.long, device=dev)
    # coarsest level: the whole maps are one region pair
    _, pos_a, pos_b, corr = match_regions(fa, fb, zero, zero, tuple(fa.shape[-2:]),
                                          tuple(fb.shape[-2:]), PATCH_SIZES[top])
    score = torch.zeros(pos_a.shape[0], device=dev, dtype=fa.dtype)
    pairs_per_level: List[int] = []
    for level in range(top, -1, -1):
        fa, fb = feats_a[level], feats_b[level]
        if level < top:
            r = SEARCH_RADII[level]
            size = 2 * r + 2
            if min(fa.shape[-2:] + fb.shape[-2:]) < size:
                raise ValueError(f"feature map at level {level + 1} is smaller than the {size}x{size} "
                                 f"search region; use larger images (>= {MIN_IMAGE_SIZE} pixels)")
            org_a = child_region_origins(pos_a, r, tuple(fa.shape[-2:]))
            org_b = child_region_origins(pos_b, r, tuple(fb.shape[-2:]))
            region, pos_a, pos_b, corr = match_regions(fa, fb, org_a, org_b, (size, size),
                                                       (size, size), PATCH_SIZES[level])
            score = score[region]
        act_a = activation_map(fa)[pos_a[:, 0], pos_a[:, 1]]
        act_b = activation_map(fb)[pos_b[:, 0], pos_b[:, 1]]
        strong = (act_a >= tau) & (act_b >= tau)
        pos_a, pos_b, corr = pos_a[strong], pos_b[strong], corr[strong]
        score = score[strong] + 0.5 * (act_a[strong] + act_b[strong])
        keep = _one_to_one(pos_a, pos_b, corr, fa.shape[-1], fb.shape[-1])
        if keep.numel() > max_pairs:
            keep = keep[torch.topk(score[keep], max_pairs).indices]
        pos_a, pos_b, corr, score = pos_a[keep], pos_b[keep], corr[keep], score[keep]
        pairs_per_level.append(int(keep.numel()))
        if keep.numel() == 0:
            break
    stride = 2 ** level  # the level the loop stopped at (0 unless no pair survived)
    off = (stride - 1) / 2.0
    pts_a = torch.stack([pos_a[:, 1], pos_a[:, 0]], 1).float() * stride + off  # (x, y)
    pts_b = torch.stack([pos_b[:, 1], pos_b[:, 0]], 1).float() * stride + off
    score = score.float()
    sel = select_top_k(pts_a, score, k, seed)
    return NBBResult(points_a=pts_a[sel].cpu(), points_b=pts_b[sel].cpu(), scores=score[sel].cpu(),
                     all_points_a=pts_a.cpu(), all_points_b=pts_b.cpu(), all_scores=score.cpu(),
                     pairs_per_level=pairs_per_level)


def select_top_k(points: torch.Tensor, scores: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """Indices of the strongest pair of each of ``k`` k-means clusters of ``points`` (N, 2),
    sorted by decreasing score. Fewer than ``k`` points: warning, all returned."""
    n = points.shape[0]
    if n <= k:
        if n < k:
            warnings.warn(f"k={k} but only {n} best-buddy pairs were found; returning all {n}",
                          UserWarning, stacklevel=3)
        return torch.argsort(scores, descending=True)
    from sklearn.cluster import KMeans
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # tiny problem: threads only oversubscribe a busy machine
        labels = KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(
            points.cpu().double().numpy())
    labels = torch.from_numpy(labels).to(points.device)
    # strongest per cluster: sort by score, first occurrence of each label
    order = torch.argsort(scores, descending=True, stable=True)
    lab = labels[order]
    first = torch.full((k,), n, dtype=torch.long, device=points.device)
    first.scatter_reduce_(0, lab, torch.arange(n, device=points.device), reduce="amin")
    first = first[first < n]
    return order[first.sort().values]
