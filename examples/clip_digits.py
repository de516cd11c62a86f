"""Train a CLIP on the captioned 8x8 digits; classify zero-shot, retrieve.

Trains `zoo.multimodal.CLIP` with `fit` on `zoo.data.captioned_digits`
(captions that name the digit and its measured thickness, slant and size),
then on the test digits: zero-shot accuracy from the prompts "a photo of
the digit zero" ... "nine", the CLIP score of the images with their own
captions and with shuffled ones, and, for a few prompts, the five test
images each retrieves, written as one PNG grid (a row per prompt) to
`--out`.

    KERAS_BACKEND=tensorflow python examples/clip_digits.py --out out/
    KERAS_BACKEND=jax python examples/clip_digits.py --epochs 10

About two minutes on 2 CPU cores with the defaults (30 epochs).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from zoo.core import backend_name  # noqa: E402
from zoo.core.threads import limit_torch_threads  # noqa: E402
from zoo.data import DIGIT_WORDS, captioned_digits  # noqa: E402
from zoo.images import save_image_grid  # noqa: E402
from zoo.metrics import clip_score  # noqa: E402
from zoo.multimodal.presets import CLIP_DIGITS_TRAINING, train_clip_digits  # noqa: E402

PROMPTS = ["a thick seven", "a thin seven", "a left-slanted 3", "a right-slanted 3",
           "a small zero", "a large zero"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=CLIP_DIGITS_TRAINING["epochs"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="out")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args()
    limit_torch_threads()
    keras.utils.set_random_seed(args.seed)

    clip, seconds = train_clip_digits(epochs=args.epochs, seed=args.seed, verbose=args.verbose)
    print(f"trained on {backend_name()} in {seconds:.0f} s")

    test = captioned_digits("test", seed=args.seed, num_captions=1)
    class_prompts = [f"a photo of the digit {w}" for w in DIGIT_WORDS]
    predicted = clip.zero_shot_classify(test.images, class_prompts).argmax(axis=1)
    print(f"zero-shot accuracy on the {len(test.labels)} test digits: "
          f"{np.mean(predicted == test.labels):.3f}")

    captions = list(test.captions[:, 0])
    shuffled = list(np.random.default_rng(args.seed).permutation(captions))
    print(f"CLIP score, own captions: {clip_score(clip, test.images, captions):.1f}; "
          f"shuffled captions: {clip_score(clip, test.images, shuffled):.1f}")

    best = clip.retrieve_images(PROMPTS, test.images, k=5)
    for prompt, row in zip(PROMPTS, best):
        print(f"{prompt!r}: test images {row.tolist()}, digits {test.labels[row].tolist()}")
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "clip_retrieval.png")
    save_image_grid(test.images[best.ravel()], path, num_columns=5)
    print(f"wrote {path}: a row of the five best test images per prompt")


if __name__ == "__main__":
    main()
