"""Window geometry and on-device cropping.

All windows of one scale have the same size, so instead of resizing each crop we resize the
whole image once (antialiased, on the device) by the factor that makes a window exactly the
model's input size, then gather every window as an integer-offset slice of that image. The
grid always ends flush with the right and bottom edges, so every pixel is covered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

MIN_WINDOW_PX = 16  # smaller windows show CLIP nothing; this also bounds the work on thin strips
# the first column of a crop's key in the embedding store: how the crop was cut from the pixels
WINDOW_CROP, CONTEXT_CROP, OCCLUDED_CROP = 1, 2, 3


def positions(length: int, window: int, stride: int) -> np.ndarray:
    """Start offsets of windows of ``window`` px every ``stride`` px, the last one flush with the end."""
    if window >= length:
        return np.zeros(1, np.int64)
    starts = np.arange(0, length - window + 1, max(1, stride), dtype=np.int64)
    if starts[-1] != length - window:
        starts = np.append(starts, length - window)
    return starts


@dataclass(frozen=True)
class WindowGrid:
    """One scale of windows over an image resized to ``resized_hw`` so that a window is ``size`` px.

    ``xs``/``ys`` are window offsets in resized pixels; ``boxes`` gives the same windows as
    xyxy in original pixels (exact: a resized pixel spans ``W / resized_w`` original pixels).
    """

    image_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    size: int
    xs: np.ndarray
    ys: np.ndarray

    @classmethod
    def build(cls, image_hw: tuple[int, int], window: float, stride: float, size: int) -> WindowGrid:
        """Windows of ``window`` original px (clipped to the image) every ``stride`` original px."""
        height, width = image_hw
        wx, wy = min(window, width), min(window, height)
        resized = (max(size, round(height * size / wy)), max(size, round(width * size / wx)))
        sx, sy = max(1, round(stride * size / wx)), max(1, round(stride * size / wy))
        return cls(image_hw, resized, size, positions(resized[1], size, sx), positions(resized[0], size, sy))

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)

    @property
    def offsets(self) -> np.ndarray:
        """``(N, 2)`` (x, y) resized-pixel offsets, row-major (y outer)."""
        yy, xx = np.meshgrid(self.ys, self.xs, indexing="ij")
        return np.stack([xx.ravel(), yy.ravel()], 1)

    @property
    def boxes(self) -> np.ndarray:
        """``(N, 4)`` float64 xyxy windows in original pixels."""
        (height, width), (rh, rw) = self.image_hw, self.resized_hw
        off = self.offsets.astype(np.float64)
        scale = np.array([width / rw, height / rh, width / rw, height / rh])
        return np.concatenate([off, off + self.size], 1) * scale

    def keys(self) -> np.ndarray:
        """``(N, 6)`` int64 store keys of the windows: ``WINDOW_CROP``, the resized image's size,
        the offset and the window's side (all that decides a window's pixels)."""
        head = np.array([WINDOW_CROP, *self.resized_hw], np.int64)
        return np.concatenate([np.tile(head, (len(self), 1)), self.offsets,
                               np.full((len(self), 1), self.size, np.int64)], 1)

    def resize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 ``(3, H, W)`` → float ``(3, *resized_hw)`` in 0..255, antialiased."""
        return resize(image, self.resized_hw)

    def crops(self, resized: torch.Tensor, index: slice | np.ndarray) -> torch.Tensor:
        """Windows ``index`` (into ``offsets``) gathered from ``resized`` as ``(n, 3, size, size)``."""
        off = torch.as_tensor(self.offsets[index], device=resized.device)
        return gather(resized, off[:, 0], off[:, 1], self.size)

    def cropper(self, image: torch.Tensor) -> Callable[[slice | np.ndarray], torch.Tensor]:
        """``crops`` of uint8 ``image`` by window index, resizing it on the first call only: a run
        that reads every window from the embedding store never resizes."""
        resized: list[torch.Tensor] = []

        def crops(index: slice | np.ndarray) -> torch.Tensor:
            if not resized:
                resized.append(self.resize(image))
            return self.crops(resized[0], index)
        return crops


def window_grids(image_hw: tuple[int, int], scales: Sequence[float], stride: float, size: int) -> list[WindowGrid]:
    """Square windows of ``scale`` × the shorter side (at least ``MIN_WINDOW_PX``, clipped to the image)."""
    short = min(image_hw)
    sides = dict.fromkeys(max(MIN_WINDOW_PX, s * short) for s in scales)  # small images: scales may coincide
    return [WindowGrid.build(image_hw, side, side * stride, size) for side in sides]


def resize(image: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """uint8/float ``(3, H, W)`` → float ``(3, *hw)``, antialiased when shrinking."""
    if tuple(image.shape[-2:]) == tuple(hw):
        return image.float()
    return F.interpolate(image[None].float(), size=hw, mode="bilinear", antialias=True, align_corners=False)[0]


def crop_boxes(image: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """Arbitrary xyxy ``boxes`` (image px) cut from uint8 ``(3, H, W)`` ``image`` and resized to
    ``(n, 3, size, size)`` floats, antialiased. One resize per box: meant for tens of boxes."""
    crops = [resize(image[:, top:bottom, left:right], (size, size))
             for left, top, right, bottom in crop_bounds(boxes, tuple(image.shape[1:]))]
    if not crops:
        return torch.empty(0, 3, size, size, device=image.device)
    return torch.stack(crops)


def crop_bounds(boxes: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """``(n, 4)`` int64 pixel bounds (left, top, right, bottom; ends exclusive, at least one pixel)
    that ``crop_boxes`` cuts for xyxy ``boxes``."""
    height, width = image_hw
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    left, top = np.clip(np.floor(b[:, 0]), 0, width - 1), np.clip(np.floor(b[:, 1]), 0, height - 1)
    right, bottom = np.clip(np.ceil(b[:, 2]), left + 1, width), np.clip(np.ceil(b[:, 3]), top + 1, height)
    return np.stack([left, top, right, bottom], 1).astype(np.int64)


def gather(image: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor, size: int) -> torch.Tensor:
    """``(n, 3, size, size)`` slices of ``(3, H, W)`` ``image`` at integer offsets, in one indexing op."""
    steps = torch.arange(size, device=image.device)
    rows = (ys[:, None] + steps)[:, :, None]
    cols = (xs[:, None] + steps)[:, None, :]
    return image[:, rows, cols].permute(1, 0, 2, 3)


def coverage_mean(
    boxes: np.ndarray, values: torch.Tensor, image_hw: tuple[int, int], heat_hw: tuple[int, int]
) -> torch.Tensor:
    """Mean of ``values`` ``(N, P)`` over the boxes covering each cell of a ``heat_hw`` grid → ``(P, h, w)``."""
    return spread(*coverage_cells(boxes, values, image_hw, heat_hw))


def coverage_cells(
    boxes: np.ndarray, values: torch.Tensor, image_hw: tuple[int, int], heat_hw: tuple[int, int]
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """``coverage_mean`` before it is ``spread`` over the grid: the means ``(P, m, n)`` between the
    boxes' edges, and each grid row's and column's index into them.

    Uses 2-D difference arrays, so the cost is O(N·P + P·m·n) whatever the box sizes (they are summed
    on the grid of the boxes' edges only: the cells between would add zeros). Sums are float64: in
    float32 a cell no box with a probability covers kept ~1e-7 of rounding, which a geometric mean
    (``candidates.sharpen``) raised to ~1e-5, unequal between batchings.
    """
    (height, width), (h, w) = image_hw, heat_hw
    b = np.asarray(boxes, np.float64) * np.array([w / width, h / height, w / width, h / height])
    x1 = np.clip(np.floor(b[:, 0] + 0.5), 0, w - 1).astype(np.int64)
    y1 = np.clip(np.floor(b[:, 1] + 0.5), 0, h - 1).astype(np.int64)
    x2 = np.clip(np.maximum(np.floor(b[:, 2] + 0.5), x1 + 1), 1, w).astype(np.int64)
    y2 = np.clip(np.maximum(np.floor(b[:, 3] + 0.5), y1 + 1), 1, h).astype(np.int64)
    xs, ys = (np.unique(np.concatenate([[0], a, b])) for a, b in ((x1, x2), (y1, y2)))  # sums change only there
    (x1, x2), (y1, y2) = np.searchsorted(xs, (x1, x2)), np.searchsorted(ys, (y1, y2))
    n = len(xs)
    corners = torch.as_tensor(np.stack([y1 * n + x1, y1 * n + x2, y2 * n + x1, y2 * n + x2]), device=values.device)
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0], device=values.device, dtype=torch.float64)
    ones = torch.ones(len(b), 1, device=values.device, dtype=torch.float64)
    stacked = torch.cat([values.double(), ones], 1)  # last channel counts coverage
    diff = torch.zeros(stacked.shape[1], len(ys) * n, device=values.device, dtype=torch.float64)
    for corner, sign in zip(corners, signs):
        diff.index_add_(1, corner, stacked.T * sign)
    total = diff.view(-1, len(ys), n).cumsum(1).cumsum(2)
    mean = (total[:-1] / total[-1:].clamp(min=1)).float()
    rows, cols = (np.searchsorted(edges, np.arange(cells), "right") - 1 for edges, cells in ((ys, h), (xs, w)))
    return mean, rows, cols  # each cell reads the last edge at or before it


def mean_of_cells(maps: Sequence[tuple[torch.Tensor, np.ndarray, np.ndarray]]) -> torch.Tensor:
    """The mean of several ``coverage_cells`` maps, spread over the grid: taken on the grid that splits
    wherever any of them does (the same cells' values as spreading each, in far fewer cells)."""
    (row_starts, rows), (col_starts, cols) = (_refined([m[axis] for m in maps]) for axis in (1, 2))
    means = torch.stack([spread(grid, r[row_starts], c[col_starts]) for grid, r, c in maps]).mean(0)
    return spread(means, rows, cols)


def _refined(indices: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The first cell of each run where all of several non-decreasing cell → edge ``indices`` hold
    still, and each cell's run."""
    change = np.zeros(len(indices[0]), bool)
    change[0] = True
    for index in indices:
        change[1:] |= index[1:] != index[:-1]
    return np.flatnonzero(change), np.cumsum(change) - 1


def spread(grid: torch.Tensor, rows: np.ndarray, cols: np.ndarray) -> torch.Tensor:
    """``grid[:, rows][:, :, cols]`` of a ``(C, m, n)`` ``grid`` (on the CPU by numpy's ``take``: 4x torch's speed)."""
    if grid.device.type == "cpu":
        return torch.from_numpy(grid.numpy().take(rows, 1).take(cols, 2))
    return grid[:, torch.as_tensor(rows, device=grid.device)[:, None], torch.as_tensor(cols, device=grid.device)]


def box_support(heatmap: torch.Tensor, boxes: np.ndarray, image_hw: tuple[int, int]) -> torch.Tensor:
    """``(N, P)``: each prompt's heatmap maximum over the cells inside each xyxy box."""
    if len(boxes) == 0:
        return heatmap.new_zeros(0, heatmap.shape[0])
    x1, y1, x2, y2 = box_cells(boxes, image_hw, tuple(heatmap.shape[1:]))
    cells = heatmap.detach().cpu().numpy()  # a numpy slice's max costs a quarter of torch's
    return torch.from_numpy(np.stack([cells[:, b:d, a:c].max(axis=(1, 2)) for a, b, c, d in zip(x1, y1, x2, y2)])
                            ).to(heatmap.device)


def box_mean(heatmap: torch.Tensor, boxes: np.ndarray, image_hw: tuple[int, int]) -> torch.Tensor:
    """``(N, P)``: each prompt's heatmap mean over the cells inside each xyxy box (an integral image)."""
    x1, y1, x2, y2 = (torch.as_tensor(c, device=heatmap.device)
                      for c in box_cells(boxes, image_hw, tuple(heatmap.shape[1:])))
    integral = torch.nn.functional.pad(heatmap.double().cumsum(1).cumsum(2), (1, 0, 1, 0))
    sums = integral[:, y2, x2] - integral[:, y1, x2] - integral[:, y2, x1] + integral[:, y1, x1]
    return (sums / ((x2 - x1) * (y2 - y1))).T.float()


def box_cells(boxes: np.ndarray, image_hw: tuple[int, int], heat_hw: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Cell bounds ``x1, y1, x2, y2`` (ends exclusive, at least one cell) of xyxy image-px boxes."""
    (height, width), (h, w) = image_hw, heat_hw
    cells = np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([w / width, h / height, w / width, h / height])
    x1 = np.clip(np.floor(cells[:, 0]), 0, w - 1).astype(int)
    y1 = np.clip(np.floor(cells[:, 1]), 0, h - 1).astype(int)
    x2 = np.clip(np.ceil(cells[:, 2]), x1 + 1, w).astype(int)
    y2 = np.clip(np.ceil(cells[:, 3]), y1 + 1, h).astype(int)
    return x1, y1, x2, y2


def window_centres(boxes: np.ndarray, keep: float = 0.5) -> np.ndarray:
    """The middle ``keep`` of each window. A window that shows an object shows it around its
    centre, so crediting only the centre keeps heatmaps from smearing a window's score over its
    background (a strip along the image border, where no window is centred, stays at 0)."""
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    half = (boxes[:, 2:] - boxes[:, :2]) * keep / 2
    return np.concatenate([centre - half, centre + half], 1)
