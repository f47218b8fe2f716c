"""Per-frame localization quality on held-out shapes videos (issue 51's instrument, first part).

    python benchmarks/video.py                                  # shapes-world, 8 videos per background
    python benchmarks/video.py --panel --videos 4 --frame-step 4
    python benchmarks/video.py --backgrounds photo --methods proposals

Videos are generated (``shapes.video``: moving shapes that enter and leave, truth per frame and
object id), encoded as H.264 with PyAV and decoded back, so the frames carry the codec's losses.
Every sampled frame is scored as an image, every class prompted (absent prompts counted): the
columns of ``benchmarks/quality.py``, then the crops each frame encoded with an empty store, against
what the same frames cost as independent images (``cache=False``). Tracking is not measured yet.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time

import torch

from fiftyone_clip_zeroshot import load_model
from fiftyone_clip_zeroshot.core.localizers import METHODS
from fiftyone_clip_zeroshot.core.models.model import PACKAGED_MODELS
from fiftyone_clip_zeroshot.core.quality import COLUMNS
from fiftyone_clip_zeroshot.shapes.video_quality import evaluate_videos, held_out_videos


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=8, help="videos per background")
    parser.add_argument("--frames", type=int, default=24, help="frames per video")
    parser.add_argument("--frame-step", type=int, default=2)
    parser.add_argument("--model", nargs="+", default=["shapes-world"])
    parser.add_argument("--panel", action="store_true", help="every packaged test model")
    parser.add_argument("--backgrounds", nargs="+", default=["flat", "photo"], choices=["flat", "photo"])
    parser.add_argument("--methods", nargs="+", default=["sliding_window", "proposals", "dense"], choices=METHODS)
    args = parser.parse_args()
    names = list(PACKAGED_MODELS) if args.panel else args.model
    print(f"{args.videos} videos of {args.frames} frames (320x240, H.264) per background, every {args.frame_step} "
          f"frame(s); torch {torch.__version__}; {platform.machine()}, {torch.get_num_threads()} threads")
    with tempfile.TemporaryDirectory(prefix="video-bench-") as folder:
        videos = {background: held_out_videos(args.videos, folder, background, args.frames)
                  for background in args.backgrounds}
        print(f"{COLUMNS}  crops/frame (store / independent)")
        print("-" * (len(COLUMNS) + 34))
        for name in names:
            model = load_model(name)
            for background, items in videos.items():
                for method in args.methods:
                    start = time.perf_counter()
                    with tempfile.TemporaryDirectory(prefix="video-store-") as store:
                        quality, stored = evaluate_videos(model, items, method, args.frame_step, cache=store)
                    _, independent = evaluate_videos(model, items, method, args.frame_step, cache=False)
                    print(f"{quality.row(name, background)}  {stored:>8.1f} / {independent:<8.1f} "
                          f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
