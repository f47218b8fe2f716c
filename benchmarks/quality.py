"""Localization quality on held-out shapes-world scenes, one row per (model, scene set, method).

    python benchmarks/quality.py --panel                 # every packaged test model (README table)
    python benchmarks/quality.py --model shapes-world    # one model: a packaged name or a CLIP folder
    python benchmarks/quality.py --panel --hard          # every scene set: easy, hard and photo
    python benchmarks/quality.py --panel --sets photo    # one scene set
    python benchmarks/quality.py --panel --prompt-templates photo   # prompts as template ensembles

Every colour×shape class is prompted on every scene, so prompts of absent classes are measured
too. Scene sets: ``easy`` — today's held-out scenes (512x384, 0–6 flat-filled shapes of 24–220 px,
overlaps bounded); ``hard`` — shapes up to 60 % of the short side with stripes, speckle or
shading, several instances of one class, touching and partly hidden (``render_hard_scene``);
``photo`` — easy's shapes on random crops of the photos installed with FiftyOne's dependencies
(``render_photo_scene``), so the background is real clutter.
Columns: mAP@0.5 and mAP@[.5:.95] (supervision's COCO-style mAP), recall at IoU 0.5, absent-prompt
false positives (share of (scene, absent prompt) pairs with a box / share of scenes with any),
how often a heatmap's peak is inside its object (objects >= 64 px), seconds per image, and for
each model its zero-shot accuracy on 600 held-out single-object crops, on the easy set's
backgrounds and on cuts of the photo set's photos. Then the false positives at IoU 0.5 of each
row, split by kind: ``loose`` (right class, the box holds the object), ``partial`` (right class,
the box lies mostly inside it), ``wrong class`` (on an object of another class), ``background``
and ``duplicate`` (``core.quality.false_positive_kinds``).
"""

from __future__ import annotations

import argparse
import platform

import torch

from fiftyone_clip_zeroshot import load_model
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.model import PACKAGED_MODELS
from fiftyone_clip_zeroshot.core.quality import COLUMNS, FALSE_POSITIVE_COLUMNS
from fiftyone_clip_zeroshot.photos import background_images
from fiftyone_clip_zeroshot.shapes.evaluate import SCENE_SETS, evaluate, held_out_scenes, zero_shot_accuracy
from fiftyone_clip_zeroshot.shapes.world import CAPTION_TEMPLATES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--model", nargs="+", default=["shapes-world"], help="packaged names or CLIP folders")
    parser.add_argument("--panel", action="store_true", help="every packaged test model")
    parser.add_argument("--sets", nargs="+", default=["easy"], choices=list(SCENE_SETS), help="scene sets")
    parser.add_argument("--hard", action="store_true", help="all scene sets: easy, hard and photo")
    parser.add_argument("--device", default=None)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--prompt-templates", default=None,
                        help="read each class through a template set (core.models.prompt_templates), e.g. photo; "
                             "'captions': the templates the test models were trained on")
    args = parser.parse_args()
    templates = CAPTION_TEMPLATES if args.prompt_templates == "captions" else args.prompt_templates

    names = list(PACKAGED_MODELS) if args.panel else args.model
    sets = list(SCENE_SETS) if args.hard else args.sets
    scenes = {name: held_out_scenes(args.scenes, name) for name in sets}
    print(f"{args.scenes} scenes of 512x384 per set; torch {torch.__version__}; {platform.machine()}, "
          f"{torch.get_num_threads()} threads")
    accuracy = {}
    photos = background_images()
    print(COLUMNS)
    print("-" * len(COLUMNS))
    false_positives: list[str] = []
    for name in names:
        model = load_model(name, device=args.device)
        accuracy[name] = zero_shot_accuracy(model, 600), zero_shot_accuracy(model, 600, photos=photos)
        for scene_set in sets:
            for method in args.methods:
                quality = evaluate(model, scenes[scene_set], method, prompt_templates=templates)
                print(quality.row(name, scene_set), flush=True)
                false_positives.append(quality.false_positive_row(name, scene_set))
    print("\nzero-shot accuracy, 600 held-out single-object crops, 30 classes (backgrounds as the easy set's / cut "
          "from the photo set's photos):")
    for name, (flat, photo) in accuracy.items():
        print(f"  {name}: {flat:.3f} / {photo:.3f}")
    print(f"\nfalse positives at IoU 0.5 and each kind's share (core.quality.false_positive_kinds)\n"
          f"{FALSE_POSITIVE_COLUMNS}\n{'-' * len(FALSE_POSITIVE_COLUMNS)}")
    print("\n".join(false_positives))


if __name__ == "__main__":
    main()
