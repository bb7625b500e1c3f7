"""Image tensor conventions: uint8 (H, W, 3) arrays <-> float (3, H, W) tensors in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float() / 127.5 - 1


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()


def to_batch(images, size: int) -> torch.Tensor:
    """PIL images -> float (B, 3, size, size) in [-1, 1] (RGB, resized)."""
    arrays = [np.array(im.convert("RGB").resize((size, size))) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 127.5 - 1


def tile(images: np.ndarray, columns: int = 8) -> np.ndarray:
    """uint8 (B, H, W, 3) -> one (rows * H, columns * W, 3) grid, row-major (black padding)."""
    n, h, w, c = images.shape
    cols = min(columns, n)
    rows = -(-n // cols)
    grid = np.zeros((rows * h, cols * w, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        grid[r * h:(r + 1) * h, k * w:(k + 1) * w] = images[i]
    return grid


def untile(grid: np.ndarray, n: int, columns: int = 8) -> list[np.ndarray]:
    """The n images `tile` put in `grid`."""
    cols = min(columns, n)
    rows = -(-n // cols)
    h, w = grid.shape[0] // rows, grid.shape[1] // cols
    return [grid[(i // cols) * h:(i // cols + 1) * h, (i % cols) * w:(i % cols + 1) * w] for i in range(n)]
