"""Text to image on the 8x8 digits: train flow matching conditioned on
captions, then draw a grid of images for several prompts.

    KERAS_BACKEND=jax python examples/text_to_image_digits.py --epochs 12
    KERAS_BACKEND=jax python examples/text_to_image_digits.py --preset t2i_digits

Trains the `t2i_digits` recipe (`zoo.diffusion.text_to_image_presets`): a
`zoo.multimodal.TextEncoder` trained jointly with a U-Net that
cross-attends to its tokens, on `zoo.data.captioned_digits` (each image
once per caption, captions dropped at 10 % for classifier-free guidance),
then writes `<out>/text_to_image_grid.png`: one row per prompt, `--per-row`
samples each, Euler with 20 steps at `--guidance`. `--preset t2i_digits`
skips training and samples the built-in preset. A frozen encoder (a CLIP's)
works the same: `FlowMatching(..., text_encoder=clip.text_encoder,
train_text_encoder=False)`.
"""

import argparse
import os
import sys
import time

# So that the example runs from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from zoo.core.threads import limit_torch_threads  # noqa: E402
from zoo.images import save_image_grid  # noqa: E402

PROMPTS = (
    "the digit 3",
    "a thick three",
    "a thin seven",
    "a right-slanted 7",
    "a small zero",
    "a large 0",
    "a photo of the digit four",
    "a picture of the number 9",  # a held-out phrasing
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--preset", help="sample this preset instead of training")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--per-row", type=int, default=8)
    parser.add_argument("--out", default=".")
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    limit_torch_threads()

    from zoo.diffusion import text_to_image_presets as recipe

    start = time.perf_counter()
    if args.preset:
        import zoo

        model = zoo.from_preset(args.preset)
    else:
        model, _, _, _ = recipe.t2i_digits(epochs=args.epochs)
        print(f"trained in {time.perf_counter() - start:.0f} s")
    prompts = [p for p in PROMPTS for _ in range(args.per_row)]
    images = model.sample(len(prompts), prompts=prompts, guidance_scale=args.guidance,
                          steps=20, sampler="euler", seed=0)
    print("prompt accuracy (digits classifier):", recipe.prompt_accuracy(
        model, guidance_scale=args.guidance))
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "text_to_image_grid.png")
    save_image_grid(np.clip(images, -1, 1), path, num_columns=args.per_row)
    for i, prompt in enumerate(PROMPTS):
        print(f"row {i + 1}: {prompt!r}")
    print(f"wrote {os.path.abspath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
