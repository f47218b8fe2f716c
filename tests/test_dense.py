"""The dense localizer: its own forward over the model's last block, tiling, and boxes from the map."""

import dataclasses
import re
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
from packaging.requirements import Requirement

from fiftyone_clip_zeroshot import OptionsError, load_model, localize
from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.core.localizers.dense import region_boxes
from fiftyone_clip_zeroshot.core.localizers.patch_tokens import (
    _neighbourhood,
    _patch_boxes,
    check_layer_api,
    dense_map,
    hidden_before_last_block,
    patch_tokens,
    self_attention,
)
from fiftyone_clip_zeroshot.core.options import LocalizeOptions
from fiftyone_clip_zeroshot.core.scoring import PromptScorer
from fiftyone_clip_zeroshot.shapes.evaluate import held_out_scenes

SCENE = held_out_scenes(2)[1]


@pytest.mark.parametrize("attention", ["clearclip", "naclip"])
@pytest.mark.parametrize("size", [64, 128])  # the model's input size, and twice it (positions interpolated)
def test_patch_tokens_are_unit_embeddings_on_the_patch_grid(shapes_model, attention, size):
    images = torch.randint(0, 256, (3, 3, size, size)).float()
    tokens = patch_tokens(shapes_model, images, attention)
    side = size // shapes_model.model.config.vision_config.patch_size
    assert tokens.shape == (3, side, side, shapes_model.model.config.projection_dim)
    assert torch.allclose(tokens.norm(dim=-1), torch.ones(3, side, side), atol=1e-4)


def test_the_variants_change_only_the_last_block(shapes_model):
    images = torch.randint(0, 256, (2, 3, 64, 64)).float()
    pooled = shapes_model.encode_images(images)
    clear, near = (patch_tokens(shapes_model, images, a) for a in ("clearclip", "naclip"))
    assert not torch.allclose(clear, near)
    assert torch.equal(pooled, shapes_model.encode_images(images))  # the loaded model itself is untouched


def test_the_transformers_layer_api_that_dense_reads_still_computes_clips_own_forward(shapes_model):
    """Dense re-runs CLIP's vision tower through transformers' internal layer API: where a release
    moves or changes it, this fails, before any map goes wrong."""
    vision = shapes_model.model.vision_model
    last = vision.encoder.layers[-1]
    pixels = shapes_model.normalize(torch.randint(0, 256, (2, 3, 128, 128)).float())
    with torch.inference_mode():
        before = hidden_before_last_block(vision, pixels)
        own = vision(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        assert torch.allclose(last(before, None), own, atol=1e-4)
        x = last.layer_norm1(before)
        attn = last.self_attn
        assert torch.allclose(self_attention(attn, x, attn.q_proj, attn.k_proj), attn(x)[0], atol=1e-4)


def test_a_layer_api_that_moved_is_one_clear_error():
    with pytest.raises(RuntimeError, match="dense localizer reads the vision tower.s layers.*lacks embeddings"):
        check_layer_api(torch.nn.Module())


def test_the_installed_transformers_is_in_the_range_pyproject_allows():
    """The tests run on the installed release, so the range's upper bound is one they proved."""
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    (requirement,) = [Requirement(r) for r in re.findall(r'^\s*"(transformers[^"]*)"', pyproject, re.M)]
    assert any(spec.operator == "<" for spec in requirement.specifier)
    assert version("transformers") in requirement.specifier


def test_neighbourhood_bias_favours_near_patches_and_leaves_the_class_token_alone():
    bias = _neighbourhood(4, torch.device("cpu"), torch.float32)
    assert bias.shape == (17, 17)
    assert (bias[0] == 0).all() and (bias[:, 0] == 0).all()
    assert bias[1, 1] == 0 and bias[1, 2] > bias[1, 3] > bias[1, 16]  # patch (0,0) vs (0,1), (0,2), (3,3)


def test_patch_boxes_cover_each_tile_row_by_row():
    tiles = np.array([[0.0, 0.0, 64.0, 64.0], [32.0, 16.0, 96.0, 80.0]])
    boxes = _patch_boxes(tiles, 4).reshape(2, 4, 4, 4)
    assert np.allclose(boxes[0, 0, 0], [0, 0, 16, 16]) and np.allclose(boxes[0, 0, 1], [16, 0, 32, 16])
    assert np.allclose(boxes[1, 3, 3], [80, 64, 96, 80])
    assert np.allclose((boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1]), 256)


def test_region_boxes_find_each_connected_region_in_image_pixels():
    heat = torch.zeros(2, 10, 20)
    heat[0, 1:4, 2:6] = 0.9  # two regions of prompt 0, one of prompt 1
    heat[0, 6:9, 12:18] = 0.9
    heat[1, 5:7, 1:3] = 0.5
    boxes = region_boxes(heat, (100, 200), thresh=0.6)  # image 10x the map
    assert {tuple(b) for b in boxes} == {(20, 10, 60, 40), (120, 60, 180, 90), (10, 50, 30, 70)}
    assert len(region_boxes(torch.zeros(2, 10, 20), (100, 200), thresh=0.6)) == 0


def test_dense_map_is_a_probability_per_cell(shapes_model):
    opts = LocalizeOptions.create(method="dense")
    scorer = PromptScorer(shapes_model, ["red circle", "blue square"], opts.negative_prompts)
    pixels = load_image(SCENE.image)
    heat = dense_map(pixels, scorer, opts, (48, 64))
    assert heat.shape == (2, 48, 64) and heat.min() >= 0 and heat.sum(0).max() <= 1 + 1e-5


@pytest.mark.parametrize("proposals", [True, False])
def test_dense_localize_finds_present_shapes_and_nothing_for_absent_ones(shapes_model, proposals):
    present = sorted(set(SCENE.labels))
    absent = [c for c in ("purple cross", "orange star", "green circle") if c not in present]
    results = localize(SCENE.image, present + absent, shapes_model, method="dense", proposals=proposals)
    assert [r.prompt for r in results] == present + absent
    assert all(len(r.detections) == 0 for r in results[len(present):])
    if proposals:  # the default: region proposals read on crops, gated by the dense map
        assert sum(len(r.detections) for r in results) > 0


def test_dense_runs_in_half_precision_like_the_gpu_path():
    half = load_model("shapes-world", device="cpu", dtype=torch.float16)
    full = load_model("shapes-world", device="cpu")
    images = torch.randint(0, 256, (2, 3, 64, 64)).float()
    tokens = patch_tokens(half, images, "naclip")
    assert tokens.dtype == torch.float32  # unit embeddings come back in float32 whatever the model's dtype
    assert torch.nn.functional.cosine_similarity(tokens, patch_tokens(full, images, "naclip"), dim=-1).min() > 0.99


def test_dense_tiles_halve_the_batch_on_out_of_memory_with_the_same_map(shapes_model, monkeypatch):
    image = np.asarray(SCENE.image)
    expected = localize(image, ["red circle"], shapes_model, method="dense", cache=False)[0]  # both encode
    model = dataclasses.replace(shapes_model, batch_size=64)
    embeddings = model.model.vision_model.embeddings
    forward = embeddings.forward

    def small_gpu(pixel_values, **kwargs):
        if len(pixel_values) > 8:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(pixel_values, **kwargs)

    monkeypatch.setattr(embeddings, "forward", small_gpu)
    result = localize(image, ["red circle"], model, method="dense", cache=False)[0]
    assert 0 < model.max_batch <= 8
    assert np.allclose(result.heatmap, expected.heatmap, atol=1e-4)  # batch size moves float sums by ~1e-5


@pytest.mark.parametrize("options, message", [
    (dict(dense_attention="sclip"), "dense_attention must be one of"),
    (dict(dense_upscale=20), "dense_upscale must be in"),
    (dict(dense_tile=0), "dense_tile must be in"),
])
def test_bad_dense_options_are_refused(options, message):
    with pytest.raises(OptionsError, match=message):
        LocalizeOptions.create(method="dense", **options)
