"""Box geometry: windows cover every pixel and map back exactly, exact crops, one box per object."""

import numpy as np
import pytest
import torch

from fiftyone_clip_zeroshot.core.geometry.boxes import make_detections, with_context
from fiftyone_clip_zeroshot.core.geometry.framing import FRAME_WEIGHT, framing
from fiftyone_clip_zeroshot.core.geometry.windows import (
    WindowGrid,
    box_support,
    coverage_cells,
    coverage_mean,
    crop_boxes,
    mean_of_cells,
    positions,
    resize,
    window_centres,
)
from fiftyone_clip_zeroshot.core.localizers.detections import _dedupe
from fiftyone_clip_zeroshot.core.options import LocalizeOptions


@pytest.mark.parametrize("length,window,stride", [(100, 30, 7), (512, 64, 21), (64, 64, 8), (10, 40, 5), (257, 256, 1)])
def test_positions_cover_every_pixel_including_edges(length, window, stride):
    starts = positions(length, window, stride)
    covered = np.zeros(length, bool)
    for s in starts:
        covered[s : s + window] = True
    assert covered.all()
    assert starts[0] == 0 and starts[-1] == max(0, length - window)
    assert np.all(np.diff(starts) <= stride) and np.all(np.diff(starts) > 0)


@pytest.mark.parametrize("hw,window,stride", [((384, 512), 46, 15), ((480, 640), 300, 100), ((37, 900), 60, 20),
                                              ((3456, 5184), 1536, 256)])
def test_grid_boxes_cover_image_and_map_back_exactly(hw, window, stride):
    grid = WindowGrid.build(hw, window, stride, 64)
    boxes = grid.boxes
    height, width = hw
    assert boxes[:, 0].min() == 0 and boxes[:, 1].min() == 0
    assert np.isclose(boxes[:, 2].max(), width) and np.isclose(boxes[:, 3].max(), height)
    # a window is exactly `size` resized pixels, i.e. size * W / resized_w original pixels
    rh, rw = grid.resized_hw
    assert np.allclose(boxes[:, 2] - boxes[:, 0], 64 * width / rw)
    assert np.allclose(boxes[:, 3] - boxes[:, 1], 64 * height / rh)
    # resized pixel offsets map to original coordinates by the exact resize ratio
    assert np.allclose(boxes[:, :2], grid.offsets * [width / rw, height / rh])


def test_crops_equal_slices_of_the_resized_image():
    image = torch.randint(0, 256, (3, 200, 300), dtype=torch.uint8)
    grid = WindowGrid.build((200, 300), 50, 20, 32)
    resized = grid.resize(image)
    assert tuple(resized.shape[1:]) == grid.resized_hw
    crops = grid.crops(resized, np.arange(len(grid)))
    for i, (x, y) in enumerate(grid.offsets):
        assert torch.equal(crops[i], resized[:, y : y + 32, x : x + 32])


def test_resize_of_identity_size_is_lossless():
    image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
    assert torch.equal(resize(image, (20, 30)), image.float())


def test_coverage_mean_matches_brute_force():
    rng = np.random.default_rng(0)
    corner = rng.uniform(0, 45, (40, 2))
    boxes = np.c_[corner, np.minimum(corner + rng.uniform(1, 20, (40, 2)), 50)]
    values = torch.rand(40, 2)
    heat = coverage_mean(boxes, values, (50, 50), (50, 50)).numpy()
    cells = np.floor(boxes + 0.5).astype(int)
    total = np.zeros((2, 50, 50))
    count = np.zeros((50, 50))
    for (x1, y1, x2, y2), v in zip(cells, values.numpy()):
        x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
        total[:, y1:y2, x1:x2] += v[:, None, None]
        count[y1:y2, x1:x2] += 1
    assert np.allclose(heat, total / np.maximum(count, 1), atol=1e-5)


def test_maps_on_the_grid_of_box_edges_equal_maps_on_every_cell():
    rng = np.random.default_rng(1)
    maps, cells = [], []
    for count in (3, 30, 200):  # few edges (large runs of equal cells) to many
        corner = rng.uniform(-5, 60, (count, 2))
        boxes = np.c_[corner, corner + rng.uniform(0, 30, (count, 2))]
        values = torch.rand(count, 3)
        cells.append(coverage_cells(boxes, values, (60, 80), (45, 61)))
        maps.append(coverage_mean(boxes, values, (60, 80), (45, 61)))
        assert torch.equal(cells[-1][0][:, cells[-1][1][:, None], cells[-1][2]], maps[-1])  # the CUDA path's indexing
    assert torch.equal(mean_of_cells(cells), torch.stack(maps).mean(0))  # to the last bit: the same cells, averaged


def test_box_support_is_the_maximum_inside_each_box():
    heat = torch.rand(2, 30, 40)
    boxes = np.array([[0, 0, 80, 60], [10.2, 20.7, 30.1, 21.0], [79, 59, 80, 60]])
    expected = [heat[:, 0:30, 0:40], heat[:, 10:11, 5:16], heat[:, 29:30, 39:40]]
    assert torch.equal(box_support(heat, boxes, (60, 80)), torch.stack([cells.amax((1, 2)) for cells in expected]))


def test_context_boxes_are_squares_inside_the_image_that_contain_the_box():
    boxes = np.array([[10, 20, 50, 40], [0, 0, 5, 5], [280, 180, 300, 200], [0, 0, 300, 200]], float)
    ctx = with_context(boxes, 0.2, (200, 300))
    assert (ctx[:, :2] >= 0).all() and (ctx[:, 2] <= 300).all() and (ctx[:, 3] <= 200).all()
    side = ctx[:, 2:] - ctx[:, :2]
    assert np.allclose(side[:, 0], side[:, 1])
    assert np.allclose(side[:3, 0], [56, 7, 28])
    inside = (ctx[:3, :2] <= boxes[:3, :2]).all(1) & (ctx[:3, 2:] >= boxes[:3, 2:]).all(1)
    assert inside.all()


def test_window_centres_keep_the_middle():
    boxes = np.array([[0, 0, 40, 40], [40, 40, 80, 100]], float)
    assert np.allclose(window_centres(boxes), [[10, 10, 30, 30], [50, 55, 70, 85]])


def test_crop_boxes_of_the_whole_image_is_a_plain_resize():
    image = torch.randint(0, 256, (3, 60, 90), dtype=torch.uint8)
    crops = crop_boxes(image, np.array([[0, 0, 90, 60], [10, 5, 40, 35]]), 16)
    assert crops.shape == (2, 3, 16, 16)
    assert torch.allclose(crops[0], resize(image, (16, 16)))
    assert torch.allclose(crops[1], resize(image[:, 5:35, 10:40], (16, 16)))


def test_a_part_of_a_small_object_merges_into_it_and_a_neighbour_stays():
    """Measured on a demo scene (dense, shapes-world): a strip along the bottom of a small circle,
    71 % inside the circle's surer box, was a second box on it; the other circle is a box of its own."""
    boxes = [[502, 398, 578, 472], [150, 272, 332, 450], [502, 452, 578, 480], [600, 398, 640, 472]]
    detections = make_detections(np.array(boxes), np.array([0.915, 0.915, 0.912, 0.8]), 0, "red circle")
    kept, over = _dedupe(detections, LocalizeOptions(method="dense"))
    assert over == 0 and sorted(kept.xyxy.tolist()) == sorted(boxes[:2] + boxes[3:])


def _blob_map() -> np.ndarray:
    """A 100x100 heatmap of a 200x200 image: an object's blob over image px 40..120 (cells 20..60)."""
    heat = np.full((100, 100), 0.1, np.float32)
    heat[20:60, 20:60] = 0.9
    return heat


def test_framing_is_highest_for_the_box_that_covers_the_blob_and_little_else():
    tight, loose, partial = [40, 40, 120, 120], [20, 20, 140, 140], [40, 40, 80, 120]
    score = framing(_blob_map(), np.array([tight, loose, partial], np.float64), (200, 200))
    assert score[0] == pytest.approx(1.0)
    assert score[1] == pytest.approx(40 * 40 / (60 * 60))  # the blob inside a box of 60x60 cells
    assert score[2] == pytest.approx(0.8)  # the half box sees the blob's cells 20..45 across, grown 1.5 times
    assert framing(np.zeros((100, 100), np.float32), np.array([tight], np.float64), (200, 200))[0] == 0


def test_refined_dedupe_keeps_the_tight_box_of_a_near_tie_with_its_own_confidence():
    """Measured on a photo scene (sliding window, shapes-photo): a loose box 0.907 suppressed the
    tight one, 0.904. Ranked by confidence plus framing, the tight box stays with its own
    confidence; a box more than FRAME_WEIGHT surer still wins; a box of another object stays."""
    boxes = np.array([[20, 20, 140, 140], [40, 40, 120, 120], [150, 150, 190, 190]], np.float64)
    options = LocalizeOptions(method="sliding_window")
    frames = framing(_blob_map(), boxes, (200, 200))
    for confidence, winner in (([0.907, 0.904, 0.8], 1), ([0.904 + FRAME_WEIGHT + 0.001, 0.904, 0.8], 0)):
        detections = make_detections(boxes, np.array(confidence), 0, "a red circle")
        kept, _ = _dedupe(detections, options, np.array(confidence) + FRAME_WEIGHT * frames)
        assert kept.xyxy.tolist() == boxes[[winner, 2]].tolist()
        assert kept.confidence.tolist() == pytest.approx([confidence[winner], 0.8])
        assert set(kept.data) == {"prompt"}
    unranked, _ = _dedupe(make_detections(boxes, np.array([0.907, 0.904, 0.8]), 0, "a red circle"), options)
    assert unranked.xyxy.tolist() == boxes[[0, 2]].tolist()
