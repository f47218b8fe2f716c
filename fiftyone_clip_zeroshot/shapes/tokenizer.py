"""Builds the CLIP BPE tokenizer files of the shapes-world model.

Vocabulary layout follows OpenAI's CLIP: 256 byte symbols, the same with ``</w>``, merged words,
then ``<|startoftext|>`` and ``<|endoftext|>``. Every byte is in the vocabulary, so any word, even
one never seen in training, becomes byte pieces rather than an unknown token (which CLIP maps to
``<|endoftext|>`` and would move the pooled end-of-text position).
"""

from __future__ import annotations

import json
from pathlib import Path

from fiftyone_clip_zeroshot.shapes.world import BACKGROUND_CAPTIONS, CAPTION_TEMPLATES, CLASSES, GENERIC_CAPTIONS


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from bytes to printable unicode symbols."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def caption_words(extra: tuple[str, ...] = ()) -> list[str]:
    """Every word the training captions use (plus ``extra`` ones), sorted."""
    phrases = list(CLASSES) + ["shape", "object"]
    texts = [t.format(c) for t in CAPTION_TEMPLATES for c in phrases] + [*BACKGROUND_CAPTIONS, *GENERIC_CAPTIONS]
    return sorted({w for t in [*texts, *extra] for w in t.lower().split()})


def write_tokenizer_files(folder: Path, extra_words: tuple[str, ...] = ()) -> None:
    """Write ``vocab.json`` and ``merges.txt`` that turn each caption word into one token."""
    symbols = list(_bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    merges: list[tuple[str, str]] = []
    # Longest words first: a short word's first merge ("a n" of "and") ranked above a longer
    # word's later ones would cut that word ("tri an g l e").
    for word in sorted(caption_words(extra_words), key=lambda w: (-len(w), w)):
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
                vocab.append(left + right)
            left += right
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
