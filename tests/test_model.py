"""The packaged CLIPs: load like any checkpoint, small, accurate, robust tokenizer; clear load errors."""

import time

import pytest
import torch
from transformers import CLIPTokenizer

from fiftyone_clip_zeroshot import ModelLoadError, load_model
from fiftyone_clip_zeroshot.core.models.model import PACKAGED_MODELS, _hub_reachable, available_models, model_hint
from fiftyone_clip_zeroshot.shapes.evaluate import zero_shot_accuracy
from fiftyone_clip_zeroshot.shapes.tokenizer import caption_words, write_tokenizer_files


@pytest.mark.parametrize("name", PACKAGED_MODELS)
def test_packaged_model_is_small_and_complete(name):
    folder = PACKAGED_MODELS[name]
    files = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= files
    cap = 6e6 if name == "shapes-siglip" else 4.2e6  # fp16 weights; the SigLIP needs a wider vision tower
    assert (folder / "model.safetensors").stat().st_size <= cap
    assert sum(p.stat().st_size for p in folder.iterdir()) <= 8 * 1024 * 1024


def test_the_panel_stays_small():
    assert sum((folder / "model.safetensors").stat().st_size for folder in PACKAGED_MODELS.values()) <= 22.8e6


@pytest.mark.parametrize("name", PACKAGED_MODELS)
def test_zero_shot_accuracy_on_held_out_crops(name, shapes_model):
    model = shapes_model if name == "shapes-world" else load_model(name, device="cpu")
    assert zero_shot_accuracy(model, count=600) >= 0.90  # a weaker model is a bad instrument


def test_unknown_words_do_not_move_the_end_of_text_token(shapes_model):
    tokenizer = shapes_model.tokenizer
    ids = tokenizer(["a fluffy zebra", "日本語 ✓"]).input_ids
    for sequence in ids:
        assert sequence[-1] == tokenizer.eos_token_id and sequence.count(tokenizer.eos_token_id) == 1
        assert tokenizer.unk_token_id not in sequence[1:-1]
    assert shapes_model.model.config.text_config.eos_token_id == tokenizer.eos_token_id


def test_written_tokenizer_makes_each_caption_word_one_token(tmp_path):
    extra = ("and", "showing")  # "and" once cut "triangle" into five pieces
    write_tokenizer_files(tmp_path, extra)
    tokenizer = CLIPTokenizer(vocab=str(tmp_path / "vocab.json"), merges=str(tmp_path / "merges.txt"))
    assert {word: tokenizer.tokenize(word) for word in caption_words(extra) if len(tokenizer.tokenize(word)) != 1} == {}


def test_text_embeddings_are_cached_and_unit_norm(shapes_model):
    first = shapes_model.encode_text(["a photo of a red circle", "blue star"])
    again = shapes_model.encode_text(["blue star"])
    assert torch.allclose(first.norm(dim=1), torch.ones(2), atol=1e-5)
    assert torch.equal(first[1], again[0])


def test_overlong_prompt_is_truncated_with_a_warning(shapes_model):
    with pytest.warns(UserWarning, match="truncated"):
        emb = shapes_model.encode_text(["red circle " * 60])
    assert emb.shape[0] == 1


def test_missing_hub_model_offline_is_one_clear_error():
    with pytest.raises(ModelLoadError, match=r"'openai/clip-vit-base-patch32'.*Download them once"):
        load_model("openai/clip-vit-base-patch32", device="cpu")


def test_unreachable_hub_fails_fast_without_offline_mode(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # as on a machine where nobody set HF_HUB_OFFLINE
    if _hub_reachable():
        pytest.skip("the hub is reachable from here; the offline path is not exercised")
    start = time.perf_counter()
    with pytest.raises(ModelLoadError, match="the hub could not be reached") as raised:
        load_model("openai/clip-vit-base-patch32", device="cpu")
    assert time.perf_counter() - start < 15  # transformers' own retries took 30 s
    assert raised.value.__cause__ is None and raised.value.__suppress_context__  # one error, no chained tracebacks


def test_folder_that_is_not_a_clip_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="is not a CLIP-family checkpoint folder"):
        load_model(str(tmp_path), device="cpu")


def test_model_fields_offer_what_loads_here():
    assert available_models() == list(PACKAGED_MODELS)  # the tests' Hugging Face cache is empty
    assert model_hint("shapes-alt-text") == ""
    assert "needs the hub" in model_hint("openai/clip-vit-base-patch32")
