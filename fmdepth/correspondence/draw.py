"""Picture of correspondences: both images side by side, pairs numbered and coloured alike."""
from __future__ import annotations

import torch


def draw_pairs(image_a: torch.Tensor, image_b: torch.Tensor, points_a: torch.Tensor,
               points_b: torch.Tensor, path: str, lines: bool = True) -> str:
    """Write a PNG of image A (left) and B (right) with numbered, coloured pairs.

    Args:
        image_a: (1, 3, H, W) or (3, H, W) in [0, 1]; image_b: same, any size.
        points_a: (N, 2) (x, y) pixels in A; points_b: (N, 2) in B.
        path: output PNG path.
        lines: also join each pair by a thin line.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    a = image_a.reshape(-1, *image_a.shape[-3:])[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    b = image_b.reshape(-1, *image_b.shape[-3:])[0].permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    if points_a.shape != points_b.shape or points_a.dim() != 2 or points_a.shape[1] != 2:
        raise ValueError(f"points_a and points_b must both be (N, 2), got {tuple(points_a.shape)} "
                         f"and {tuple(points_b.shape)}")
    H = max(a.shape[0], b.shape[0])
    gap = max(4, a.shape[1] // 40)
    W = a.shape[1] + gap + b.shape[1]
    fig = plt.figure(figsize=(W / 100 * 2, H / 100 * 2), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(a, extent=(-0.5, a.shape[1] - 0.5, a.shape[0] - 0.5, -0.5))
    off = a.shape[1] + gap
    ax.imshow(b, extent=(off - 0.5, off + b.shape[1] - 0.5, b.shape[0] - 0.5, -0.5))
    ax.set_xlim(-0.5, W - 0.5)
    ax.set_ylim(H - 0.5, -0.5)
    ax.axis("off")
    cmap = plt.get_cmap("tab10" if len(points_a) <= 10 else "hsv")
    n = max(1, len(points_a))
    for i, (pa, pb) in enumerate(zip(points_a.tolist(), points_b.tolist())):
        color = cmap(i % 10) if len(points_a) <= 10 else cmap(i / n)
        xb = pb[0] + off
        if lines:
            ax.plot([pa[0], xb], [pa[1], pb[1]], "-", color=color, linewidth=0.8, alpha=0.6)
        for x, y in ((pa[0], pa[1]), (xb, pb[1])):
            ax.plot(x, y, "o", markersize=7, markerfacecolor=color, markeredgecolor="white")
            ax.text(x + 4, y - 4, str(i + 1), color="white", fontsize=9, fontweight="bold",
                    bbox=dict(facecolor=color, edgecolor="none", pad=1.0, alpha=0.85))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
