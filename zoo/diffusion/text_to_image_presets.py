"""The `t2i_digits` built-in preset: text-to-image flow matching on the
captioned 8x8 digits, its recipe, golden probe and quality evaluation.

    OMP_NUM_THREADS=1 KERAS_BACKEND=torch python -m zoo.presets.build t2i_digits

The model: `FlowMatching` whose U-Net (16 channels, multipliers 1 and 2)
cross-attends to the tokens of a `zoo.multimodal.TextEncoder` (2 layers,
width 32, context 16) trained jointly with it, captions dropped at 10 % for
classifier-free guidance. `benchmarks/text_to_image_digits.py` measures
its prompt accuracy more fully.
"""

import numpy as np

from zoo.data.captioned import DIGIT_WORDS

ENCODER = {"context_length": 16, "hidden_dim": 32, "num_layers": 2, "num_heads": 4}
UNET = {"channels": 16, "channel_multipliers": (1, 2), "num_res_blocks": 1}
TRAINING = {"epochs": 12, "batch_size": 64, "learning_rate": 2e-3, "num_captions": 5}
# The guidance scale `python -m zoo sample t2i_digits` uses by default.
GUIDANCE_SCALE = 3.0


def t2i_model(seed=0, **kwargs):
    """The preset's (untrained) model: flow matching with a jointly trained
    text encoder over the captioned digits' vocabulary."""
    from zoo.data import caption_vocabulary
    from zoo.diffusion import FlowMatching
    from zoo.multimodal import TextEncoder

    encoder = TextEncoder(caption_vocabulary(), seed=seed, **ENCODER)
    return FlowMatching((8, 8, 1), text_encoder=encoder, text_dropout=0.1, seed=seed,
                        **{**UNET, **kwargs})


def training_pairs(num_captions=TRAINING["num_captions"], seed=0):
    """`(images, captions)`: each training image once per caption."""
    from zoo.data import captioned_digits

    data = captioned_digits("train", seed=seed, num_captions=num_captions)
    return np.repeat(data.images, num_captions, axis=0), data.captions.reshape(-1)


def t2i_digits(epochs=None):
    import keras

    settings = dict(TRAINING, epochs=epochs or TRAINING["epochs"])
    images, captions = training_pairs()
    steps = settings["epochs"] * -(-len(images) // settings["batch_size"])
    model = t2i_model()
    schedule = keras.optimizers.schedules.CosineDecay(settings["learning_rate"], steps,
                                                      alpha=0.05)
    model.compile(optimizer=keras.optimizers.Adam(schedule))
    model.fit(images, captions, batch_size=settings["batch_size"],
              epochs=settings["epochs"], verbose=2)
    return model, {
        "dataset": "zoo.data.captioned_digits('train', seed=0, num_captions=5): 1,437 "
                   "images x 5 captions",
        "description": "Text-to-image flow matching on the 8x8 digits: a U-Net of 16 "
        "channels cross-attending to a jointly trained 2-layer TextEncoder (width 32), "
        "captions dropped at 10 % for classifier-free guidance; "
        "sample(n, prompts=[...], guidance_scale=3.0).",
        "training": {"epochs": settings["epochs"], "batch_size": settings["batch_size"],
                     "pairs": len(images),
                     "optimizer": f"Adam({settings['learning_rate']:g}), cosine decay to 5 %"},
        "sampling": {"guidance_scale": GUIDANCE_SCALE, "sampler": "euler", "steps": 20},
    }, ("prompt_accuracy", {"guidance_scale": GUIDANCE_SCALE}), "text_sample"


# ---------------------------------------------------------------------------
# Golden probe and quick evaluation (registered in `zoo.presets.checks`).


def text_sample_inputs(model, num=4, seed=0):
    """Fixed inputs of the `text_sample` probe."""
    rng = np.random.default_rng(seed)
    prompts = ["the digit 3", "a thick seven", "a small left-slanted 2",
               "a photo of the digit zero"]
    return {"noise": rng.standard_normal((num, *model.data_shape)).round(4),
            "prompts": (prompts * num)[:num], "guidance_scale": GUIDANCE_SCALE,
            "sampler": "heun", "steps": 4}


def text_sample_probe(model, inputs):
    """A few guided steps of the flow-matching sampler from fixed NumPy
    noise and prompts, in NumPy around the model's EMA velocity: no backend
    random generator, so equal on every backend."""
    from zoo.diffusion.flow_samplers import flow_coefficients, integrate_numpy

    table, _ = flow_coefficients(str(inputs["sampler"]), int(inputs["steps"]), model.shift)
    x = np.asarray(inputs["noise"], np.float64)
    prompts = [str(p) for p in inputs["prompts"]]
    scale = float(inputs["guidance_scale"])

    def velocity(x, t):
        from keras import ops

        v = model.velocity(x.astype(np.float32), np.full((len(x),), t, np.float32),
                           guidance_scale=scale, prompts=prompts)
        return np.asarray(ops.convert_to_numpy(v), np.float64)

    with model.ema_weights():
        return integrate_numpy(table, x, velocity)


def prompt_accuracy(model, guidance_scale=GUIDANCE_SCALE, num_per_digit=10, steps=20,
                    sampler="euler", seed=0):
    """Share of images made from "the digit {d}" and "a {word}" prompts
    that the shipped digits classifier reads as d (all ten digits, half
    numerals, half words). Backends draw different noise: the figure varies
    a little between them."""
    digits = np.repeat(np.arange(10), num_per_digit)
    prompts = [f"the digit {d}" if i % 2 else f"a {DIGIT_WORDS[d]}"
               for i, d in enumerate(digits)]
    x = model.sample(len(prompts), prompts=prompts, guidance_scale=guidance_scale,
                     steps=steps, sampler=sampler, seed=seed, verbose=False)
    read = classify_digits(x)
    per_digit = np.array([np.mean(read[digits == d] == d) for d in range(10)])
    return {"accuracy": round(float(np.mean(per_digit)), 4),
            "worst_digit_accuracy": round(float(np.min(per_digit)), 4)}


def classify_digits(images):
    """The digit the shipped digits classifier reads in each image."""
    from keras import ops

    from zoo.metrics.digits_classifier import load_digits_classifier

    classifier, _ = load_digits_classifier()
    logits = [ops.convert_to_numpy(classifier(np.asarray(images[i:i + 512], np.float32),
                                              training=False))
              for i in range(0, len(images), 512)]
    return np.argmax(np.concatenate(logits), axis=-1)


def quality_checks(figures):
    """The bounds the preset keeps meeting (100 samples: a few points of
    noise between draws and backends)."""
    return [{"figure": "accuracy", "min": round(figures["accuracy"] - 0.08, 4)}]
