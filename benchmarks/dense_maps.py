"""How much the dense localizer's patch tokens know, per model and last-block variant.

    python benchmarks/dense_maps.py --panel            # every packaged test model
    python benchmarks/dense_maps.py --model <folder>   # any CLIP checkpoint

On held-out shapes-world scenes, every class prompted, the dense map (``dense_logits``, all
texts, before any box is drawn) is read cell by cell:

- object centre: the cell at each object's box centre names the object's class (argmax over the
  30 classes and the negative prompts);
- background: a cell outside every object names a negative prompt;
- own-class peak: median over objects of the object's class probability maximum inside its box;
- absent peak: 95th percentile over (scene, absent class) of that class's maximum anywhere.

A map that is right at object centres and on background is a usable per-patch classifier; the
last two columns show how well the map alone could separate present from absent prompts.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from fiftyone_clip_zeroshot import load_model
from fiftyone_clip_zeroshot.core.geometry.images import load_image
from fiftyone_clip_zeroshot.core.localize import heatmap_shape
from fiftyone_clip_zeroshot.core.localizers.patch_tokens import dense_logits
from fiftyone_clip_zeroshot.core.models.model import PACKAGED_MODELS, ClipModel
from fiftyone_clip_zeroshot.core.options import LocalizeOptions
from fiftyone_clip_zeroshot.core.scoring import PromptScorer
from fiftyone_clip_zeroshot.core.vocabulary import ATTENTION
from fiftyone_clip_zeroshot.shapes.evaluate import held_out_scenes
from fiftyone_clip_zeroshot.shapes.world import CLASSES, Scene

HEADER = (f"{'model':22s} {'variant':10s} {'tile':>5s} {'upscale':>7s} {'object centre':>13s} {'background':>10s} "
          f"{'own-class peak':>14s} {'absent peak p95':>15s}")


def read_maps(model: ClipModel, scenes: list[Scene], opts: LocalizeOptions) -> dict[str, float]:
    scorer = PromptScorer(model, list(CLASSES), opts.negative_prompts)
    centre, background, own, absent = [], [], [], []
    for scene in scenes:
        pixels = load_image(scene.image).to(model.device)
        height, width = pixels.shape[1:]
        heat_hw = heatmap_shape((height, width), opts.heatmap_size)
        probs = torch.softmax(dense_logits(pixels, scorer, opts, heat_hw), dim=0).cpu().numpy()
        cells = np.array([heat_hw[1] / width, heat_hw[0] / height] * 2)
        inside = np.zeros(heat_hw, bool)
        present = set()
        for box, label in zip(scene.boxes.reshape(-1, 4) * cells, scene.labels):
            c = CLASSES.index(label)
            present.add(c)
            x1, y1 = int(box[0]), int(box[1])
            x2, y2 = max(x1 + 1, int(np.ceil(box[2]))), max(y1 + 1, int(np.ceil(box[3])))
            inside[y1:y2, x1:x2] = True
            own.append(probs[c, y1:y2, x1:x2].max())
            centre.append(probs[:, (y1 + y2) // 2, (x1 + x2) // 2].argmax() == c)
        background.append((probs.argmax(0)[~inside] >= len(CLASSES)).mean())
        absent += [probs[c].max() for c in range(len(CLASSES)) if c not in present]
    return {"centre": float(np.mean(centre)), "background": float(np.mean(background)),
            "own": float(np.median(own)), "absent": float(np.percentile(absent, 95))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=20)
    parser.add_argument("--model", nargs="+", default=["shapes-world"], help="packaged names or CLIP folders")
    parser.add_argument("--panel", action="store_true", help="every packaged test model")
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    scenes = held_out_scenes(args.scenes)
    print(f"{args.scenes} easy held-out scenes of 512x384, {len(CLASSES)} classes + negative prompts per cell")
    print(HEADER)
    print("-" * len(HEADER))
    for name in list(PACKAGED_MODELS) if args.panel else args.model:
        model = load_model(name, device=args.device)
        for attention in ATTENTION:
            for tile, upscale in ((0.3, 1.0), (0.5, 2.0), (1.0, 3.0)):
                opts = LocalizeOptions.create(method="dense", dense_attention=attention, dense_tile=tile,
                                              dense_upscale=upscale)
                r = read_maps(model, scenes, opts)
                print(f"{name:22s} {attention:10s} {tile:5.1f} {upscale:7.1f} {r['centre']:13.2f} "
                      f"{r['background']:10.2f} {r['own']:14.2f} {r['absent']:15.2f}", flush=True)


if __name__ == "__main__":
    main()
