"""CLIP on the captioned digits: zero-shot accuracy, attribute accuracy and
retrieval recall@1/@5 on the test digits, held-out phrasings separately.

Trains the `clip_digits` recipe (zoo/multimodal/presets.py) on the backend
KERAS_BACKEND selects and evaluates it (`evaluate_clip_digits`):

    KERAS_BACKEND=tensorflow python benchmarks/clip_digits.py
    KERAS_BACKEND=jax python benchmarks/clip_digits.py --epochs 60
    OMP_NUM_THREADS=1 KERAS_BACKEND=torch python benchmarks/clip_digits.py

Add `--markdown docs/performance/clip_digits.md` to write the tables there.
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _markdown  # noqa: E402
import keras  # noqa: E402

from zoo.core import backend_name  # noqa: E402
from zoo.multimodal.presets import (  # noqa: E402
    CLIP_DIGITS_TRAINING,
    evaluate_clip_digits,
    train_clip_digits,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=CLIP_DIGITS_TRAINING["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the figures here")
    _markdown.add_argument(parser)
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    model, seconds = train_clip_digits(epochs=args.epochs, seed=args.seed)
    figures = evaluate_clip_digits(model, seed=args.seed)
    backend = backend_name()
    print(json.dumps({"backend": backend, "epochs": args.epochs, "train_seconds": seconds,
                      **figures}), flush=True)
    print()
    print("| backend | epochs | train s | zero-shot: photo of the digit | the digit N "
          "| held-out: picture of the number | thickness | slant | size |")
    print("|---|---|---|---|---|---|---|---|---|")
    f = figures
    print(f"| {backend} | {args.epochs} | {seconds:.0f} | {f['zero_shot_photo']:.3f} "
          f"| {f['zero_shot_numeral']:.3f} | {f['zero_shot_heldout']:.3f} "
          f"| {f['thickness_accuracy']:.3f} | {f['slant_accuracy']:.3f} "
          f"| {f['size_accuracy']:.3f} |")
    print()
    print("| backend | phrasings | text->image R@1 (fit baseline) | R@5 (fit baseline) "
          "| image->text R@1 (fit baseline) | R@5 (fit baseline) |")
    print("|---|---|---|---|---|---|")
    for prefix, name in (("", "training"), ("heldout_", "held-out")):
        cells = []
        for direction in ("text_to_image", "image_to_text"):
            for k in (1, 5):
                key = f"{prefix}{direction}_r@{k}"
                cells.append(f"{f[key]:.3f} ({f[key + '_fit_baseline']:.3f})")
        print(f"| {backend} | {name} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"backend": backend, "epochs": args.epochs, "train_seconds": seconds,
                       **figures}, out, indent=1)


if __name__ == "__main__":
    with _markdown.capture_argv("CLIP on the captioned digits"):
        main()
