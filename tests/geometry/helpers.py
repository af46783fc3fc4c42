"""Small builders shared by the geometry tests."""
import torch


def make_K(batch, height, width, dtype=torch.float32, device="cpu", fx=None, fy=None):
    """A plausible pinhole K for an image of this size, repeated over the batch."""
    fx = 0.58 * width if fx is None else fx
    fy = 1.92 * height if fy is None else fy
    K = torch.tensor([[fx, 0.0, (width - 1) / 2 + 0.3],
                      [0.0, fy, (height - 1) / 2 - 0.2],
                      [0.0, 0.0, 1.0]], dtype=dtype, device=device)
    return K.expand(batch, 3, 3).clone()


def eye4(batch, dtype=torch.float32, device="cpu"):
    return torch.eye(4, dtype=dtype, device=device).expand(batch, 4, 4).clone()
