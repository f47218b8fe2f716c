"""Model families: a SigLIP loads by its config, scores by its own sigmoid, reads texts as it was
trained, runs every method (its patch tokens through its pooling head); prompt ensembles."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fiftyone_clip_zeroshot as fz
from fiftyone_clip_zeroshot import ModelLoadError, OptionsError, load_model
from fiftyone_clip_zeroshot.core.classify import classify_image, score_boxes
from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.core.localizers.patch_tokens import ATTENTION_POOLED, hidden_before_last_block, tower_of
from fiftyone_clip_zeroshot.core.models.families import CLIP, SIGLIP, family_of
from fiftyone_clip_zeroshot.core.models.model import model_family
from fiftyone_clip_zeroshot.core.models.prompt_templates import OWN_SETS, resolve_templates
from fiftyone_clip_zeroshot.core.scoring import PromptScorer
from fiftyone_clip_zeroshot.labeling.runs.records import DetectRun
from fiftyone_clip_zeroshot.shapes.evaluate import evaluate, held_out_scenes, with_bias_shift

REPO = Path(__file__).resolve().parents[1]
SCENE = held_out_scenes(2)[1]
FAST = dict(window_scales=(0.3, 0.5), context_scales=(0.3, 0.6), cache=False)


@pytest.fixture(scope="module")
def siglip(tmp_path_factory, shapes_model):
    """A tiny SigLIP with random weights, saved as SigLIP checkpoints are (shapes-world's
    tokenizer; SigLIP's start of scale 10 and bias -10) and read back by ``load_model``."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    folder = tmp_path_factory.mktemp("siglip")
    tokenizer = shapes_model.tokenizer
    specials = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id)
    config = SiglipConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=64, projection_size=96, **specials),
        vision_config=dict(hidden_size=96, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16))
    torch.manual_seed(0)
    model = SiglipModel(config)
    with torch.no_grad():
        model.logit_scale.fill_(np.log(10))
        model.logit_bias.fill_(-10)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    SiglipImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return load_model(str(folder), device="cpu")


def test_the_family_comes_from_the_checkpoints_config(siglip, shapes_model):
    assert siglip.family is SIGLIP and shapes_model.family is CLIP
    assert siglip.logit_bias < -1 and shapes_model.logit_bias == 0  # SigLIP's learnt bias is kept
    assert siglip.embedding_dim == siglip.model.config.vision_config.hidden_size  # no image projection


def test_a_checkpoint_of_another_kind_is_one_clear_error(tmp_path):
    from transformers import BertConfig

    config = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    config.save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="is a 'bert' checkpoint.*not a CLIP-family model.*clip.*siglip"):
        load_model(str(tmp_path), device="cpu")


def test_siglip_texts_are_padded_to_full_length_so_a_batch_never_changes_one(siglip):
    alone = siglip.encode_text(["a red circle"])
    siglip._text_cache.clear()
    together = siglip.encode_text(["a red circle", "a small striped dark blue star in the corner of a photo"])
    assert torch.allclose(alone[0], together[0], atol=1e-5)
    assert siglip.tokenize(["a red circle"])["input_ids"].shape[1] == siglip.max_text_tokens


def test_siglip_scores_are_its_own_sigmoid_each_prompt_alone(siglip):
    embeddings = siglip.encode_images(torch.randint(0, 256, (4, 3, 64, 64)).float())
    one = PromptScorer(siglip, ["a red circle"], ["a photo of background"])(embeddings)
    two = PromptScorer(siglip, ["a red circle", "a blue star"], ["a photo of background", "a shape"])(embeddings)
    text = siglip.encode_text(["a red circle"])
    expected = torch.sigmoid(siglip.logit_scale * embeddings @ text.T + siglip.logit_bias)
    assert torch.allclose(one, expected, atol=1e-5) and torch.allclose(two[:, :1], one, atol=1e-5)


def test_clip_scores_stay_a_softmax_that_prompts_share(shapes_model):
    embeddings = shapes_model.encode_images(torch.randint(0, 256, (4, 3, 64, 64)).float())
    one = PromptScorer(shapes_model, ["a red circle"], ["a photo of background"])(embeddings)
    two = PromptScorer(shapes_model, ["a red circle", "a red shape"], ["a photo of background"])(embeddings)
    assert (two[:, 0] < one[:, 0]).all() and (two.sum(1) <= 1 + 1e-6).all()


def test_siglips_tower_reruns_its_own_forward_and_pools_each_token_alone(siglip):
    """Dense reads SigLIP's layers (no class token, an attention-pooling head): the blocks it
    re-runs give the tower's own states, and its per-token head is the pooling head wherever
    every token is the same (attention over equal tokens is that token)."""
    vision = siglip.model.vision_model
    assert tower_of(vision) is ATTENTION_POOLED
    pixels = siglip.normalize(torch.randint(0, 256, (2, 3, 128, 128)).float())
    with torch.inference_mode():
        before = hidden_before_last_block(vision, pixels)
        last = vision.encoder.layers[-1](before, None)
        own = vision(pixel_values=pixels, interpolate_pos_encoding=True).last_hidden_state
        assert torch.allclose(vision.post_layernorm(last), own, atol=1e-4)
        same = last[:, :1].expand(-1, 6, -1).contiguous()
        assert torch.allclose(vision.head(vision.post_layernorm(same)), ATTENTION_POOLED.head(siglip.model, same)[:, 0],
                              atol=1e-4)


@pytest.mark.parametrize("method", ["sliding_window", "occlusion", "proposals", "dense"])
def test_every_method_runs_on_siglip_at_its_familys_threshold(method, siglip):
    results = fz.localize(SCENE.image, ["red circle", "blue star"], siglip, method=method, **FAST)
    assert [r.prompt for r in results] == ["red circle", "blue star"]
    for result in results:
        assert 0 <= result.heatmap.min() <= result.heatmap.max() <= 1
        assert (result.detections.confidence >= SIGLIP.threshold(method)).all()


def test_unset_thresholds_follow_the_models_family(siglip, shapes_model):
    opts = fz.LocalizeOptions.create(method="proposals")
    assert opts.confidence_thresh is None
    assert opts.for_model(siglip).confidence_thresh == SIGLIP.threshold("proposals")
    assert opts.for_model(shapes_model).confidence_thresh == CLIP.threshold("proposals")
    given = fz.LocalizeOptions.create(method="proposals", confidence_thresh=0.3)
    assert given.for_model(siglip).confidence_thresh == 0.3


def test_verify_and_classify_score_in_the_familys_meaning(siglip):
    pixels = load_image(SCENE.image)
    verdict = score_boxes(pixels, SCENE.boxes.reshape(-1, 4), ["red circle", "blue star"], siglip)
    assert len(verdict.labels) == len(SCENE.boxes) and (verdict.probs <= 1).all()
    probs, logits = classify_image(pixels, ["red circle", "blue star", "green square"], siglip)
    assert np.allclose(probs, 1 / (1 + np.exp(-logits)), atol=1e-5)  # independent, not summing to one


def test_a_prompt_ensemble_is_the_normalised_mean_of_its_templates(shapes_model):
    templates = ("a photo of a {}", "a drawing of a {}")
    ensemble = shapes_model.encode_text(["red circle", "blue star"], templates)
    each = shapes_model.encode_text(["a photo of a red circle", "a drawing of a red circle"])
    expected = torch.nn.functional.normalize(each.mean(0), dim=-1)
    assert torch.allclose(ensemble[0], expected, atol=1e-6) and torch.allclose(ensemble.norm(dim=1), torch.ones(2))


def test_template_sets_by_name_and_clear_errors():
    assert resolve_templates("photo") == OWN_SETS["photo"] and resolve_templates(None) is None
    for bad in ("a {} in {the} wild", "{{}}", "a {0} and a {}", "a {!r}", "a {:>9}", "a } {}"):
        with pytest.raises(OptionsError, match="each with one '{}'"):
            resolve_templates([bad])
    assert resolve_templates(["a {{literal}} {}"]) == ("a {{literal}} {}",)
    pytest.importorskip("open_clip")
    openai = resolve_templates("openai")
    assert len(openai) == 80 and all(t.count("{}") == 1 for t in openai)
    with pytest.raises(OptionsError, match="unknown prompt_templates set 'imagenet'"):
        resolve_templates("imagenet")
    with pytest.raises(OptionsError, match="each with one '{}'"):
        fz.LocalizeOptions.create(prompt_templates=["a photo of a cat"])


def test_prompt_templates_change_the_scores_and_are_recorded(shapes_model, tmp_path):
    import fiftyone as fo

    plain = fz.localize(SCENE.image, ["red circle"], shapes_model, method="proposals", **FAST)[0]
    ensembled = fz.localize(SCENE.image, ["red circle"], shapes_model, method="proposals", prompt_templates="photo",
                            **FAST)[0]
    assert not np.allclose(plain.heatmap, ensembled.heatmap)
    dataset = fo.Dataset()
    try:
        SCENE.image.save(tmp_path / "scene.png")
        dataset.add_sample(fo.Sample(filepath=str(tmp_path / "scene.png")))
        fz.detect(dataset, ["red circle"], model=shapes_model, method="proposals", label_field="auto",
                  heatmaps=False, progress=False, prompt_templates=["a photo of a {}", "a {}"], **FAST)
        record = DetectRun.load(dataset, "auto").options
        assert record["prompt_templates"] == ["a photo of a {}", "a {}"]
        assert record["confidence_thresh"] == CLIP.threshold("proposals")
    finally:
        dataset.delete()


@pytest.fixture(scope="module")
def open_clip_copy(tmp_path_factory):
    """shapes-world written in OpenCLIP's layout by the conversion script."""
    pytest.importorskip("open_clip")
    out = tmp_path_factory.mktemp("open-clip") / "shapes-world"
    result = subprocess.run([sys.executable, "scripts/convert_to_open_clip.py", "shapes-world", str(out)],
                            cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return out


def test_an_open_clip_checkpoint_reads_as_the_transformers_original(open_clip_copy, shapes_model):
    """The OpenCLIP path reads a model right: the same weights in OpenCLIP's layout, read by
    open_clip and carried into transformers (checked at load against open_clip's own forward),
    embed as the original does, and every method gives the same map."""
    copy = load_model(str(open_clip_copy), device="cpu")
    assert copy.family is CLIP and model_family(str(open_clip_copy)) == "CLIP, OpenCLIP"
    images = torch.randint(0, 256, (4, 3, 64, 64)).float()
    texts = ["a red circle", "a small blue star beside a green square"]
    assert (copy.encode_images(images) - shapes_model.encode_images(images)).abs().max() <= 1e-4
    assert (copy.encode_text(texts) - shapes_model.encode_text(texts)).abs().max() <= 1e-4
    for method in ("proposals", "dense"):
        ours, theirs = (fz.localize(SCENE.image, ["red circle"], m, method=method, **FAST)[0]
                        for m in (copy, shapes_model))
        assert np.abs(ours.heatmap - theirs.heatmap).max() <= 1e-4


def test_a_long_prompt_warns_that_an_open_clip_tokenizer_truncated_it(open_clip_copy):
    """Both kinds of open_clip tokenizer (a wrapped Hugging Face one here, its own BPE below)
    pad and truncate to the context length, so the lengths come from their untruncated ids."""
    import open_clip

    from fiftyone_clip_zeroshot.core.models.openclip import OpenClipTokenizer

    copy = load_model(str(open_clip_copy), device="cpu")
    with pytest.warns(UserWarning, match="was truncated"):
        copy.encode_text(["a red circle " * 40])
    bpe = OpenClipTokenizer(open_clip.get_tokenizer("ViT-B-32"), 77)
    assert [len(ids) for ids in bpe(["a cat", "a cat " * 60])["input_ids"]] == [4, 122]
    assert bpe(["a cat"], return_tensors="pt")["input_ids"].shape == (1, 77)


def test_a_sigmoid_open_clip_model_is_refused_not_scored_as_a_softmax(tmp_path):
    """``logit_bias`` has no place in a transformers CLIPModel: dropping it would change the scores' meaning."""
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    config = dict(embed_dim=32, init_logit_bias=-10.0,
                  vision_cfg=dict(image_size=32, layers=1, width=64, head_width=32, patch_size=16),
                  text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
    save_file(open_clip.CLIP(**config).state_dict(), tmp_path / "open_clip_model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    with pytest.raises(ModelLoadError, match="logit_bias.*sigmoid"):
        load_model(str(tmp_path), device="cpu")


def test_an_open_clip_architecture_it_does_not_carry_is_refused_by_name(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    from safetensors.torch import save_file

    config = dict(embed_dim=32, quick_gelu=True,
                  vision_cfg=dict(image_size=32, layers=1, width=64, head_width=32, patch_size=16, ls_init_value=0.1),
                  text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1))
    save_file(open_clip.CLIP(**config).state_dict(), tmp_path / "open_clip_model.safetensors")
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": config}))
    with pytest.raises(ModelLoadError, match="has layer scale; load_model carries OpenCLIP's ViT CLIP architecture"):
        load_model(str(tmp_path), device="cpu")


@pytest.mark.parametrize("model_type", [*CLIP.model_types, *SIGLIP.model_types])
def test_every_familys_architecture_runs_the_localizers(model_type, shapes_model):
    """Each model type a family names builds (tiny, random weights) into a ``ClipModel`` whose
    texts, crops and patch tokens the localizers read: the mechanics, not the quality."""
    from transformers import AutoConfig, AutoModel

    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, image_size=64,
                  patch_size=16)
    altclip = {"project_dim": 32, "pad_token_id": 1} if model_type == "altclip" else {}
    text = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, vocab_size=628,
                max_position_embeddings=80, **altclip)
    config = AutoConfig.for_model(model_type, text_config=text, vision_config=vision,
                                  **({} if model_type == "siglip" else {"projection_dim": 32}))
    model = dataclasses.replace(shapes_model, name=model_type, model=AutoModel.from_config(config).eval(),
                                family=family_of(model_type), _text_cache={}, _fingerprint=None)
    for method in ("proposals", "dense"):
        results = fz.localize(SCENE.image, ["red circle", "blue star"], model, method=method, **FAST)
        assert len(results) == 2 and all(0 <= r.heatmap.min() <= r.heatmap.max() <= 1 for r in results)


def test_siglip_defaults_find_the_objects_with_its_bias_moved_by_two():
    """Another SigLIP checkpoint sits at another absolute level: at its family's default thresholds
    the packaged SigLIP keeps its boxes with its learnt bias moved by ±2 (docs/quality.md)."""
    model = load_model("shapes-siglip", device="cpu")
    scenes = held_out_scenes(4)
    base = evaluate(model, scenes, "proposals", cache=False).map50
    assert base >= 0.5
    for shift in (-2.0, 2.0):
        assert evaluate(with_bias_shift(model, shift), scenes, "proposals", cache=False).map50 >= base - 0.1, shift
