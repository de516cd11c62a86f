"""Golden values and quick quality evaluations of presets.

Golden values are the outputs of a *deterministic* function of the model on
fixed NumPy inputs, recorded in metadata.json when a preset is built:

| probe | model | inputs | output |
|---|---|---|---|
| `generator` | GANs | latents `z` | the (EMA) generator's `G(z)` |
| `decode` | VAEs | latents `z` | `decode(z)`, the decoder's mean |
| `log_prob` | flows | points `x` | `log_prob(x)` |
| `denoiser` | diffusion | `x_t`, `t` (and `labels`) | the (EMA) denoiser's prediction |
| `flow_sample` | flow matching | noise, `labels`, sampler, steps | samples from that noise |
| `logits` | GPT | tokens | next-token logits |
| `clip_embeddings` | CLIP | images, prompts' token ids | their unit embeddings |

No backend random number generator is involved, so a preset reproduces its
goldens under every backend (to 1e-4, relative to the outputs' scale). A
conditional model's probes pass labels (one of each class). `flow_sample`
runs a flow-matching sampler (the coefficient table `sample` uses, with the
model's EMA velocity) from fixed NumPy noise: the same noise, labels, sampler
and steps give the same samples on every backend (`sample(seed=...)` draws
its noise from the backend's own generator, which differs between backends).

Quality evaluations (`EVALUATIONS`) recompute a preset's recorded figures in
a few seconds; the preset's `quality.checks` give the bounds each figure
must still meet (the build sets them with a margin).
"""

import numpy as np

from zoo.presets.format import PresetError

GOLDEN_RTOL = 1e-4


def _ema_generator(model):
    return model.ema_generator if model.ema_generator is not None else model.generator


def _numpy(x):
    from keras import ops

    return np.asarray(ops.convert_to_numpy(x), dtype=np.float64)


def _generator(model, inputs):
    return _numpy(_ema_generator(model)(np.asarray(inputs["z"], np.float32), training=False))


def _decode(model, inputs):
    return np.asarray(model.decode(np.asarray(inputs["z"], np.float32)), np.float64)


def _log_prob(model, inputs):
    return np.asarray(model.log_prob(np.asarray(inputs["x"], np.float32)), np.float64)


def _labels(inputs):
    return None if "labels" not in inputs else np.asarray(inputs["labels"], np.int32)


def _denoiser(model, inputs):
    x = np.asarray(inputs["x_t"], np.float32)
    # DDPM's denoiser takes integer timesteps, flow matching's float times.
    t = np.asarray(inputs["t"], getattr(model, "time_dtype", "int32"))
    labels = _labels(inputs)
    with model.ema_weights():
        return _numpy(model.denoiser([x, t] + ([] if labels is None else [labels]),
                                     training=False))


def _flow_sample(model, inputs):
    from zoo.diffusion.flow_samplers import flow_coefficients, integrate_numpy

    table, _ = flow_coefficients(str(inputs["sampler"]), int(inputs["steps"]), model.shift)
    x = np.asarray(inputs["noise"], np.float64)
    labels = _labels(inputs)

    # One compiled velocity (jax.jit, tf.function; eager on PyTorch):
    # op-by-op JAX would compile every operation of the U-Net on its own.
    velocity_fn = model.compile_function(
        (lambda x, t, y: model.velocity(x, t, y)) if labels is not None
        else (lambda x, t: model.velocity(x, t))
    )

    def velocity(x, t):
        args = [x.astype(np.float32), np.full((len(x),), t, np.float32)]
        return _numpy(velocity_fn(*args, *([] if labels is None else [labels]), seed=0))

    with model.ema_weights():
        return integrate_numpy(table, x, velocity)


def _text_sample(model, inputs):
    from zoo.diffusion.text_to_image_presets import text_sample_probe

    return text_sample_probe(model, inputs)


def _clip_embeddings(model, inputs):
    from zoo.multimodal.presets import clip_embeddings_probe

    return clip_embeddings_probe(model, inputs)


def _logits(model, inputs):
    return _numpy(model(np.asarray(inputs["tokens"], np.int32), training=False))


PROBES = {
    "generator": _generator,
    "decode": _decode,
    "log_prob": _log_prob,
    "denoiser": _denoiser,
    "flow_sample": _flow_sample,
    "text_sample": _text_sample,
    "logits": _logits,
    "clip_embeddings": _clip_embeddings,
}

# The probe each family's goldens use.
DEFAULT_PROBES = {
    "gan": "generator",
    "vae": "decode",
    "flow": "log_prob",
    "diffusion": "denoiser",
    "transformer": "logits",
}


def probe_inputs(probe, model, num=4, seed=0):
    """Fixed inputs for `probe`, from NumPy's generator with `seed`."""
    rng = np.random.default_rng(seed)
    if probe in ("generator", "decode"):
        return {"z": rng.standard_normal((num, model.latent_dim)).round(4)}
    if probe == "log_prob":
        return {"x": rng.uniform(-1.5, 1.5, (num, *model.data_shape)).round(4)}
    classes = getattr(model, "num_classes", None)
    if probe == "denoiser":
        num = classes or num
        t = np.linspace(0, model.timesteps - 1, num).astype(np.int64)
        inputs = {"x_t": rng.standard_normal((num, *model.data_shape)).round(4), "t": t}
        return {**inputs, "labels": np.arange(num)} if classes else inputs
    if probe == "flow_sample":
        num = classes or num
        inputs = {"noise": rng.standard_normal((num, *model.data_shape)).round(4),
                  "sampler": "heun", "steps": 4}
        return {**inputs, "labels": np.arange(num)} if classes else inputs
    if probe == "text_sample":  # text-to-image flow matching (t2i_digits)
        from zoo.diffusion.text_to_image_presets import text_sample_inputs

        return text_sample_inputs(model, num, seed)
    if probe == "clip_embeddings":  # CLIP (clip_digits): images and prompts
        from zoo.multimodal.presets import clip_embeddings_inputs

        return clip_embeddings_inputs(model, num, seed)
    if probe == "logits":
        return {"tokens": rng.integers(0, model.vocab_size, (2, 8))}
    raise ValueError(f"`probe` must be one of {sorted(PROBES)}; received {probe!r}.")


def record_goldens(model, probe):
    """`{"probe", "inputs", "outputs"}` for metadata.json."""
    inputs = probe_inputs(probe, model)
    outputs = PROBES[probe](model, inputs)
    return {
        "probe": probe,
        "inputs": {k: np.asarray(v).tolist() for k, v in inputs.items()},
        "outputs": np.asarray(outputs, np.float64).round(7).tolist(),
    }


def check_goldens(model, metadata, rtol=GOLDEN_RTOL):
    """Reruns the golden probe; returns the largest error relative to the
    outputs' scale (max |expected|), and raises `PresetError` above `rtol`."""
    goldens = metadata.get("goldens")
    if not goldens:
        raise PresetError("The preset's metadata records no golden values.")
    probe = PROBES.get(goldens.get("probe"))
    if probe is None:
        raise PresetError(f"Unknown golden probe {goldens.get('probe')!r}.")
    expected = np.asarray(goldens["outputs"], np.float64)
    actual = probe(model, goldens["inputs"])
    if actual.shape != expected.shape:
        raise PresetError(
            f"Golden outputs have shape {actual.shape}, metadata records {expected.shape}."
        )
    scale = max(float(np.max(np.abs(expected))), 1e-12)
    error = float(np.max(np.abs(actual - expected))) / scale
    if not error <= rtol:
        raise PresetError(
            f"The model's {goldens['probe']} outputs differ from the preset's "
            f"golden values by {error:.3g} (relative), more than {rtol:g}."
        )
    return error


# ---------------------------------------------------------------------------
# Quick quality evaluations: each returns a dict of figures.


def ring_modes(model, num_samples=2500, seed=0, std=0.02):
    """GAN on the ring: the EMA generator on NumPy latents; modes with >= 20
    high-quality samples (PacGAN's rule) and the high-quality share."""
    from zoo.data import Ring

    ring = Ring(std=std)
    z = np.random.default_rng(seed).standard_normal((num_samples, model.latent_dim))
    x = _numpy(_ema_generator(model)(z.astype(np.float32), training=False))
    cov = ring.mode_coverage(x, min_count=20)
    return {
        "modes_covered": int(cov["modes_covered"]),
        "high_quality": round(float(cov["high_quality"]), 4),
        "reverse_kl": round(float(cov["reverse_kl"]), 4),
    }


def ring_diffusion(model, num_samples=1000, steps=20, sampler="ddim", seed=0, std=0.1):
    """DDPM on the ring: `steps`-step samples; modes covered (>= 20 each) and
    the high-quality share. Backends draw different noise, so these figures
    vary a little between backends."""
    from zoo.data import Ring

    ring = Ring(std=std)
    x = model.sample(num_samples, steps=steps, sampler=sampler, seed=seed, verbose=False)
    cov = ring.mode_coverage(x, min_count=20)
    return {
        "modes_covered": int(cov["modes_covered"]),
        "high_quality": round(float(cov["high_quality"]), 4),
    }


def digits_flow(model, num_per_class=20, steps=10, sampler="euler", seed=0):
    """Class-conditional flow matching on the digits: `num_per_class`
    samples of each digit, by `sampler` in `steps` steps from NumPy noise
    (the `flow_sample` probe, so every backend draws the same samples);
    their FID against the test split and the share the digits classifier
    reads as the requested digit, overall and for the worst digit."""
    from zoo.data import digits
    from zoo.metrics import fid

    test, _ = digits("test")
    labels = np.repeat(np.arange(10), num_per_class).astype(np.int32)
    noise = np.random.default_rng(seed).standard_normal((len(labels), *model.data_shape))
    x = _flow_sample(model, {"noise": noise, "labels": labels, "sampler": sampler,
                             "steps": steps})
    per_label = digits_accuracy(x, labels)
    return {
        "fid": round(float(fid(test, x)), 3),
        "accuracy": round(float(np.mean(per_label)), 4),
        "worst_label_accuracy": round(float(np.min(per_label)), 4),
    }


def digits_accuracy(images, labels):
    """Per digit 0-9: the share of `images` of that label that the shipped
    digits classifier (`zoo.metrics.digits_classifier`) reads as it."""
    from zoo.metrics.digits_classifier import load_digits_classifier

    classifier, _ = load_digits_classifier()
    logits = np.concatenate([
        _numpy(classifier(np.asarray(images[i:i + 512], np.float32), training=False))
        for i in range(0, len(images), 512)
    ])
    right = np.argmax(logits, axis=-1) == np.asarray(labels)
    return np.array([float(np.mean(right[labels == k])) for k in range(10)])


def prompt_accuracy(model, **kwargs):
    """Text-to-image digits: the share of images made from digit prompts
    that the digits classifier reads right (`zoo.diffusion.text_to_image_presets`)."""
    from zoo.diffusion.text_to_image_presets import prompt_accuracy

    return prompt_accuracy(model, **kwargs)


def clip_digits(model, seed=0):
    """CLIP on the captioned digits: zero-shot accuracy, attribute accuracy
    and retrieval recall on the test split (`zoo.multimodal.presets`)."""
    from zoo.multimodal.presets import evaluate_clip_digits

    return evaluate_clip_digits(model, seed=seed)


def digits_elbo(model, num_samples=1, seed=0):
    """VAE on the digits test split: -ELBO in nats per image (NumPy noise)."""
    from zoo.data import digits

    test, _ = digits("test")
    return {"test_neg_elbo": round(float(-np.mean(model.elbo(test, num_samples, seed))), 3)}


def toy_nll(model, density="moons", num_points=5000, seed=1):
    """Flow on a toy density: held-out NLL, the true entropy, and the gap."""
    from zoo.data import toy_density

    d = toy_density(density)
    nll = -float(np.mean(model.log_prob(d.sample(num_points, seed=seed)).astype(np.float64)))
    entropy = float(d.entropy())
    return {
        "test_nll": round(nll, 4),
        "entropy": round(entropy, 4),
        "gap": round(nll - entropy, 4),
    }


def markov_cross_entropy(model, order=1, num_sequences=128, length=65, seed=7):
    """GPT on `MarkovText(order)`: held-out cross-entropy in nats per token
    (each sequence given its first token), the entropy rate, and the gap."""
    from zoo.data import MarkovText

    source = MarkovText(vocab_size=model.vocab_size, order=order, seed=0)
    tokens = source.sequences(num_sequences, length, seed=seed)
    ce = -float(np.mean(model.log_prob(tokens))) / (length - 1)
    rate = float(source.entropy_rate())
    return {
        "test_cross_entropy": round(ce, 4),
        "entropy_rate": round(rate, 4),
        "gap": round(ce - rate, 4),
    }


EVALUATIONS = {
    "ring_modes": ring_modes,
    "ring_diffusion": ring_diffusion,
    "digits_flow": digits_flow,
    "prompt_accuracy": prompt_accuracy,
    "digits_elbo": digits_elbo,
    "toy_nll": toy_nll,
    "markov_cross_entropy": markov_cross_entropy,
    "clip_digits": clip_digits,
}


def evaluate(model, metadata):
    """Reruns the preset's quick evaluation: `(figures, failures)`, where
    `failures` lists the checks of `quality.checks` that do not hold."""
    quality = metadata.get("quality") or {}
    name = quality.get("evaluation")
    if name not in EVALUATIONS:
        raise PresetError(f"The preset records no known quality evaluation ({name!r}).")
    figures = EVALUATIONS[name](model, **quality.get("kwargs", {}))
    failures = []
    for check in quality.get("checks", []):
        value = figures[check["figure"]]
        if "min" in check and not value >= check["min"]:
            failures.append(f"{check['figure']} = {value} < {check['min']}")
        if "max" in check and not value <= check["max"]:
            failures.append(f"{check['figure']} = {value} > {check['max']}")
    return figures, failures
