"""A literal, per-pixel-loop implementation of the best-buddy region matcher.

It computes exactly what :func:`fmdepth.correspondence.nbb.match_regions` computes -- common
appearance per region pair, patch cross-correlation (mean cosine over a ``p x p`` patch),
mutual nearest neighbours inside the region pair -- with explicit Python loops over region pairs,
positions and patch offsets, the way the original implementation scans its search boxes. It
exists to check the vectorised matcher (tests) and to measure the speed ratio (bench); it is far
too slow for real use.
"""
from __future__ import annotations

from typing import List, Tuple

import torch
import torch.nn.functional as F

from .nbb import common_appearance


def reference_match_regions(feat_a: torch.Tensor, feat_b: torch.Tensor, origins_a: torch.Tensor,
                            origins_b: torch.Tensor, size_a: Tuple[int, int],
                            size_b: Tuple[int, int], patch: int
                            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Same arguments and results as :func:`fmdepth.correspondence.nbb.match_regions`."""
    h = patch // 2
    pad_mode = "reflect" if min(feat_a.shape[-2:] + feat_b.shape[-2:]) > h else "replicate"
    pad_a = F.pad(feat_a[None], (h, h, h, h), mode=pad_mode)[0]  # (C, Hp, Wp)
    pad_b = F.pad(feat_b[None], (h, h, h, h), mode=pad_mode)[0]
    (sha, swa), (shb, swb) = size_a, size_b
    regions: List[int] = []
    pos_a: List[Tuple[int, int]] = []
    pos_b: List[Tuple[int, int]] = []
    corrs: List[float] = []
    for n in range(origins_a.shape[0]):
        ya0, xa0 = (int(v) for v in origins_a[n])
        yb0, xb0 = (int(v) for v in origins_b[n])
        # windows (region + patch margin), channels last, as the vectorised path sees them
        win_a = pad_a[:, ya0:ya0 + sha + 2 * h, xa0:xa0 + swa + 2 * h].permute(1, 2, 0)
        win_b = pad_b[:, yb0:yb0 + shb + 2 * h, xb0:xb0 + swb + 2 * h].permute(1, 2, 0)
        core_a = win_a[h:h + sha, h:h + swa].reshape(1, -1, win_a.shape[-1])
        core_b = win_b[h:h + shb, h:h + swb].reshape(1, -1, win_b.shape[-1])
        na, nb = common_appearance(win_a.reshape(1, -1, win_a.shape[-1]),
                                   win_b.reshape(1, -1, win_b.shape[-1]), core_a, core_b)
        na = na.view(sha + 2 * h, swa + 2 * h, -1)
        nb = nb.view(shb + 2 * h, swb + 2 * h, -1)

        def corr(ya: int, xa: int, yb: int, xb: int) -> float:
            total = 0.0
            for dy in range(patch):
                for dx in range(patch):
                    total += float(torch.dot(na[ya + dy, xa + dx], nb[yb + dy, xb + dx]))
            return total / (patch * patch)

        table = [[corr(ya, xa, yb, xb) for yb in range(shb) for xb in range(swb)]
                 for ya in range(sha) for xa in range(swa)]
        best_b = [max(range(len(row)), key=row.__getitem__) for row in table]
        best_a = [max(range(len(table)), key=lambda i, j=j: table[i][j]) for j in range(shb * swb)]
        for ia, ib in enumerate(best_b):
            if best_a[ib] == ia:
                regions.append(n)
                pos_a.append((ya0 + ia // swa, xa0 + ia % swa))
                pos_b.append((yb0 + ib // swb, xb0 + ib % swb))
                corrs.append(table[ia][ib])
    long = dict(dtype=torch.long)
    return (torch.tensor(regions, **long), torch.tensor(pos_a, **long).view(-1, 2),
            torch.tensor(pos_b, **long).view(-1, 2), torch.tensor(corrs, dtype=feat_a.dtype))
