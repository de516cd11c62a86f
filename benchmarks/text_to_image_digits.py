"""Text-to-image digits: does the image follow the prompt?

    KERAS_BACKEND=jax OMP_NUM_THREADS=1 python benchmarks/text_to_image_digits.py
    KERAS_BACKEND=torch OMP_NUM_THREADS=1 python benchmarks/text_to_image_digits.py --per-digit 10

The model is the `t2i_digits` preset (`--preset` for another): flow
matching whose U-Net cross-attends to a jointly trained text encoder, on
`zoo.data.captioned_digits` (built by `python -m zoo.presets.build
t2i_digits`). Every figure samples with Euler, `--steps` steps, seed 0.

1. Prompt accuracy per guidance scale: the share of images made from
   "the digit {d}" (numeral) and "a thick {word}" (word) prompts that the
   shipped digits classifier (`zoo.metrics.digits_classifier`) reads as d,
   `--per-digit` images of each digit and prompt. Scale 0 is the
   unconditional model (chance: about 0.1).
2. Attribute agreement at `--guidance` (default 3): for each attribute
   (thickness, slant, size) and each of its three words, prompts
   "a {word} {digit word}"; the share of images whose measured attribute
   (`zoo.data.measure_attributes`) falls in the third of its class that the
   word names (the thirds of the real digits of that class, as the captions
   were made; chance 1/3), and the mean measured value per word.
3. Held-out phrasings: captions from `TRAIN_TEMPLATES` and from
   `HELDOUT_TEMPLATES` (word orders and function words never seen in
   training), filled with a random digit and random attribute words: digit
   accuracy and the agreement of each attribute the caption names, for the
   two phrasing sets separately.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import _markdown  # noqa: E402

SCALES = (0.0, 1.0, 2.0, 3.0, 5.0)


def class_edges():
    """Per class and attribute, the terciles of the real digits (all 1797)."""
    from zoo.data import ATTRIBUTE_WORDS, captioned_digits

    data = captioned_digits("all", seed=0, num_captions=1)
    return {name: np.stack([np.quantile(data.attributes[name][data.labels == k], [1 / 3, 2 / 3])
                            for k in range(10)]) for name in ATTRIBUTE_WORDS}


def bins_of(images, digits, edges):
    from zoo.data import measure_attributes

    values = measure_attributes(np.clip(images, -1, 1))
    return values, {name: (values[name] > edges[name][digits, 0]).astype(int)
                    + (values[name] > edges[name][digits, 1]).astype(int) for name in edges}


def classify(images):
    from keras import ops

    from zoo.metrics.digits_classifier import load_digits_classifier

    classifier, _ = load_digits_classifier()
    logits = ops.convert_to_numpy(classifier(np.asarray(images, np.float32), training=False))
    return np.argmax(logits, axis=-1)


def sample(model, prompts, guidance, steps, seed=0, batch=500):
    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        out.append(model.sample(len(chunk), prompts=chunk, guidance_scale=guidance,
                                steps=steps, sampler="euler", seed=seed + start,
                                verbose=False))
    return np.concatenate(out)


def prompt_accuracy(model, per_digit, steps):
    from zoo.data import DIGIT_WORDS

    digits = np.repeat(np.arange(10), per_digit)
    print("\n| guidance scale | \"the digit {d}\" | \"a thick {word}\" | both |")
    print("|---:|---:|---:|---:|")
    for scale in SCALES:
        numeral = classify(sample(model, [f"the digit {d}" for d in digits], scale, steps))
        word = classify(sample(model, [f"a thick {DIGIT_WORDS[d]}" for d in digits], scale,
                               steps))
        a, b = np.mean(numeral == digits), np.mean(word == digits)
        print(f"| {scale:g} | {a:.3f} | {b:.3f} | {(a + b) / 2:.3f} |")


def attribute_agreement(model, per_digit, steps, guidance, edges):
    from zoo.data import ATTRIBUTE_WORDS, DIGIT_WORDS

    digits = np.repeat(np.arange(10), per_digit)
    print(f"\nAttribute agreement at guidance {guidance:g} (chance 0.333); mean measured "
          "value per word:\n")
    print("| attribute | agreement | digit accuracy | " + " | ".join(
        f"word {i + 1}" for i in range(3)) + " |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, words in ATTRIBUTE_WORDS.items():
        hits, right, means = [], [], []
        for b, word in enumerate(words):
            images = sample(model, [f"a {word} {DIGIT_WORDS[d]}" for d in digits], guidance,
                            steps)
            values, bins = bins_of(images, digits, edges)
            hits.append(bins[name] == b)
            right.append(classify(images) == digits)
            means.append(f"{word} {np.mean(values[name]):.2f}")
        print(f"| {name} | {np.mean(hits):.3f} | {np.mean(right):.3f} | "
              + " | ".join(means) + " |")


def phrasings(model, count, steps, guidance, edges, seed=0):
    from zoo.data import ATTRIBUTE_WORDS, DIGIT_WORDS, HELDOUT_TEMPLATES, TRAIN_TEMPLATES

    rng = np.random.default_rng(seed)
    print(f"\nTraining against held-out phrasings, guidance {guidance:g}, {count} captions "
          "each (agreement: chance 0.333):\n")
    print("| phrasings | digit accuracy | " + " | ".join(
        f"{n} agreement" for n in ATTRIBUTE_WORDS) + " |")
    print("|---|---:|" + "---:|" * len(ATTRIBUTE_WORDS))
    for label, templates in (("training", TRAIN_TEMPLATES), ("held-out", HELDOUT_TEMPLATES)):
        digits = rng.integers(0, 10, count)
        chosen = rng.integers(0, len(templates), count)
        wanted = {n: rng.integers(0, 3, count) for n in ATTRIBUTE_WORDS}
        prompts = []
        for i in range(count):
            digit = DIGIT_WORDS[digits[i]] if rng.random() < 0.5 else str(digits[i])
            words = {n: ATTRIBUTE_WORDS[n][wanted[n][i]] for n in ATTRIBUTE_WORDS}
            text = templates[chosen[i]].format(digit=digit, **words)
            # "a eight" -> "an eight", as the captions read.
            parts = text.split(" ")
            for j in range(len(parts) - 1):
                if parts[j] == "a" and parts[j + 1].startswith(("a", "e", "i", "o", "u", "8")):
                    parts[j] = "an"
            prompts.append(" ".join(parts))
        images = sample(model, prompts, guidance, steps)
        _, bins = bins_of(images, digits, edges)
        cells = []
        for n in ATTRIBUTE_WORDS:
            named = np.array(["{" + n + "}" in templates[c] for c in chosen])
            cells.append(f"{np.mean(bins[n][named] == wanted[n][named]):.3f} "
                         f"({named.sum()})" if named.any() else "-")
        print(f"| {label} | {np.mean(classify(images) == digits):.3f} | "
              + " | ".join(cells) + " |")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="t2i_digits")
    parser.add_argument("--per-digit", type=int, default=20,
                        help="images per digit and prompt (20)")
    parser.add_argument("--steps", type=int, default=20, help="Euler steps (20)")
    parser.add_argument("--guidance", type=float, default=3.0,
                        help="guidance scale of the attribute and phrasing tables (3)")
    parser.add_argument("--phrasing-count", type=int, default=500,
                        help="captions per phrasing set (500)")
    _markdown.add_argument(parser)
    args = parser.parse_args(argv)
    with _markdown.capture_argv("Text-to-image digits: prompt accuracy", argv=argv):
        import zoo

        start = time.perf_counter()
        model = zoo.from_preset(args.preset)
        edges = class_edges()
        prompt_accuracy(model, args.per_digit, args.steps)
        attribute_agreement(model, args.per_digit, args.steps, args.guidance, edges)
        phrasings(model, args.phrasing_count, args.steps, args.guidance, edges)
        print(f"\n{time.perf_counter() - start:.0f} s in all.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
