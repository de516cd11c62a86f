"""Trains the built-in presets: `python -m zoo.presets.build NAME [--out DIR]`.

Each recipe fixes its model, data, optimizer, steps and seeds, and the
backend it is trained on (the built-ins are spread over TensorFlow, JAX and
PyTorch so that loading across backends is exercised for real):

    KERAS_BACKEND=jax        python -m zoo.presets.build gan_ring
    OMP_NUM_THREADS=1 KERAS_BACKEND=torch python -m zoo.presets.build vae_digits
    KERAS_BACKEND=tensorflow python -m zoo.presets.build nsf_moons
    KERAS_BACKEND=jax        python -m zoo.presets.build ddpm_ring
    KERAS_BACKEND=tensorflow python -m zoo.presets.build gpt_markov
    KERAS_BACKEND=jax        python -m zoo.presets.build fm_ring
    OMP_NUM_THREADS=1 KERAS_BACKEND=jax python -m zoo.presets.build fm_digits

`python -m zoo.presets.build all` lists these commands. The preset is
written to `zoo/presets/builtin/NAME/` (or `--out`), with its quality
figures (quick evaluations from `zoo.presets.checks`, plus fuller ones
measured here), the bounds the tests hold it to, and golden outputs.
Training a recipe on another backend needs `--any-backend` (and `--out`,
so that the shipped preset is not replaced by accident).
"""

import argparse
import math
import os
import sys
import time

import keras
import numpy as np

from zoo.core import backend_name
from zoo.diffusion.presets import fm_digits, fm_ring
from zoo.diffusion.text_to_image_presets import t2i_digits
from zoo.multimodal.presets import clip_digits
from zoo.presets import checks
from zoo.presets.sources import BUILTIN_DIR


def _cosine_adam(learning_rate, steps):
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, steps, alpha=0.01)
    return keras.optimizers.Adam(schedule)


def gan_ring():
    from zoo.data import Ring
    from zoo.gan import GAN

    steps, batch_size = 6000, 256
    data = Ring(std=0.02).sample(steps * batch_size // 10, seed=0)
    model = GAN(data_shape=(2,), seed=0)
    model.compile()
    model.fit(data, batch_size=batch_size, epochs=10, verbose=2)
    return model, {
        "dataset": "Ring(n_modes=8, radius=2, std=0.02) from zoo.data",
        "description": "GAN (non-saturating, 3x128 MLPs, EMA generator) on the ring of 8 "
        "Gaussians, the mode-collapse benchmark.",
        "training": {"steps": steps, "batch_size": batch_size, "optimizer": "default Adam"},
    }, ("ring_modes", {}), "generator"


def vae_digits():
    from zoo.data import digits
    from zoo.vae import VAE

    train, _ = digits("train")
    epochs, batch_size = 60, 64
    model = VAE((8, 8, 1), latent_dim=8, num_levels=17, filters=16, hidden_units=(256,),
                kl_warmup_steps=1000, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    model.fit(train, batch_size=batch_size, epochs=epochs, verbose=2)
    return model, {
        "dataset": "zoo.data.digits (8x8, 17 levels in [-1, 1]), train split",
        "description": "VAE with a discretized Gaussian decoder (learned per-pixel scale), "
        "latent 8, on the 8x8 digits.",
        "training": {"epochs": epochs, "batch_size": batch_size, "optimizer": "Adam(2e-3)"},
    }, ("digits_elbo", {}), "decode"


def nsf_moons():
    from zoo.data import TwoMoons
    from zoo.flow import NeuralSplineFlow

    steps, batch_size, epochs = 3000, 256, 10
    data = TwoMoons(noise=0.1).sample(steps * batch_size // epochs, seed=0)
    model = NeuralSplineFlow((2,), num_couplings=4, num_bins=16, hidden_units=(64, 64), seed=0)
    model.compile(optimizer=_cosine_adam(3e-3, steps))
    model.fit(data, batch_size=batch_size, epochs=epochs, verbose=2)
    return model, {
        "dataset": "TwoMoons(noise=0.1) from zoo.data",
        "description": "Neural spline flow (4 rational-quadratic couplings, 16 bins) on "
        "two moons.",
        "training": {"steps": steps, "batch_size": batch_size,
                     "optimizer": "Adam(3e-3), cosine decay"},
    }, ("toy_nll", {"density": "moons"}), "log_prob"


def ddpm_ring():
    from zoo.data import Ring
    from zoo.diffusion import DDPM

    epochs, batch_size = 10, 256
    data = Ring(std=0.1).sample(32768, seed=0)
    model = DDPM((2,), hidden_units=128, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(data, batch_size=batch_size, epochs=epochs, verbose=2)
    return model, {
        "dataset": "Ring(n_modes=8, radius=2, std=0.1) from zoo.data",
        "description": "DDPM (cosine schedule, v-prediction, residual MLP, EMA) on the "
        "ring of 8 Gaussians.",
        "training": {"epochs": epochs, "batch_size": batch_size, "optimizer": "Adam(1e-3)"},
    }, ("ring_diffusion", {}), "denoiser"


def gpt_markov():
    from zoo.data import MarkovText
    from zoo.transformer import GPT, CharTokenizer

    source = MarkovText(vocab_size=27, order=1, seed=0)
    steps, batch_size, length = 300, 32, 64
    tokens = source.sequences(steps * batch_size, length + 1, seed=1)
    model = GPT(max_length=128, num_layers=2, num_heads=4, hidden_dim=64,
                position_embedding="rotary", tokenizer=CharTokenizer(source.alphabet), seed=0)
    # benchmarks/gpt_markov.py's schedule: warm-up, cosine decay, clipping.
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=steps, warmup_target=3e-3, warmup_steps=steps // 20)
    model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01,
                                                   global_clipnorm=1.0))
    model.fit(tokens, batch_size=batch_size, epochs=1, verbose=2)
    return model, {
        "dataset": "MarkovText(vocab_size=27, order=1, seed=0) from zoo.data",
        "description": "GPT (2 layers, 4 heads, width 64, rotary) on synthetic order-1 "
        "Markov text; character tokenizer.",
        "training": {"steps": steps, "batch_size": batch_size, "sequence_length": length,
                     "optimizer": "AdamW(3e-3, warm-up + cosine, weight decay 0.01, "
                                  "global_clipnorm 1)"},
    }, ("markov_cross_entropy", {}), "logits"


# name: (recipe, the backend it is trained on)
RECIPES = {
    "gan_ring": (gan_ring, "jax"),
    "vae_digits": (vae_digits, "torch"),
    "nsf_moons": (nsf_moons, "tensorflow"),
    "ddpm_ring": (ddpm_ring, "jax"),
    "gpt_markov": (gpt_markov, "tensorflow"),
    "fm_ring": (fm_ring, "jax"),
    "fm_digits": (fm_digits, "jax"),
    "t2i_digits": (t2i_digits, "torch"),
    "clip_digits": (clip_digits, "tensorflow"),
}
# Recipes timed on one thread (the figure in their metadata is comparable).
ONE_THREAD = {"vae_digits", "fm_digits"}


def quality_checks(evaluation, figures):
    """The bounds a preset must keep meeting, with margin, per evaluation."""
    if evaluation == "ring_modes":
        return [{"figure": "modes_covered", "min": figures["modes_covered"]},
                {"figure": "high_quality", "min": round(figures["high_quality"] - 0.02, 4)}]
    if evaluation == "ring_diffusion":
        # Sampling noise comes from the backend's generator: wider margins.
        return [{"figure": "modes_covered", "min": figures["modes_covered"]},
                {"figure": "high_quality", "min": round(figures["high_quality"] - 0.06, 4)}]
    if evaluation == "digits_flow":
        # The same samples on every backend (NumPy noise): margins for
        # numerical drift only.
        return [{"figure": "fid", "max": round(figures["fid"] * 1.1 + 0.5, 3)},
                {"figure": "accuracy", "min": round(figures["accuracy"] - 0.03, 4)},
                {"figure": "worst_label_accuracy",
                 "min": round(figures["worst_label_accuracy"] - 0.1, 4)}]
    if evaluation == "prompt_accuracy":
        from zoo.diffusion.text_to_image_presets import quality_checks as t2i_checks

        return t2i_checks(figures)
    if evaluation == "digits_elbo":
        return [{"figure": "test_neg_elbo", "max": round(figures["test_neg_elbo"] + 0.5, 3)}]
    if evaluation == "toy_nll":
        return [{"figure": "gap", "max": round(figures["gap"] + 0.01, 4)}]
    if evaluation == "markov_cross_entropy":
        return [{"figure": "gap", "max": round(figures["gap"] + 0.005, 4)}]
    if evaluation == "clip_digits":
        # Deterministic (no noise): margins for float differences between backends.
        return [{"figure": "zero_shot_photo", "min": round(figures["zero_shot_photo"] - 0.02, 4)},
                {"figure": "text_to_image_r@5",
                 "min": round(figures["text_to_image_r@5"] - 0.02, 4)}]
    raise ValueError(f"Unknown evaluation {evaluation!r}.")


def fuller_figures(name, model):
    """Slower, fuller figures recorded beside the quick ones (not re-tested)."""
    if name == "vae_digits":
        from zoo.data import digits

        test, _ = digits("test")
        nll = -model.log_prob(test, num_importance_samples=200, seed=0)
        return {"test_nll_k200": round(float(np.mean(nll)), 3),
                "test_bits_per_dim_k200": round(float(np.mean(nll)) / (64 * math.log(2)), 4)}
    if name == "gan_ring":
        return {f"pacgan_{k}": v for k, v in checks.ring_modes(model, num_samples=10000,
                                                               seed=1).items()}
    if name == "nsf_moons":
        return {f"{k}_20k": v for k, v in checks.toy_nll(model, num_points=20000,
                                                         seed=2).items()}
    if name == "ddpm_ring":
        return {f"dpm++2m_20_{k}": v for k, v in checks.ring_diffusion(
            model, num_samples=2500, sampler="dpm++2m", seed=1).items()}
    if name == "fm_digits":
        return digits_figures(model)
    if name == "gpt_markov":
        return {f"{k}_512": v for k, v in checks.markov_cross_entropy(
            model, num_sequences=512, seed=11).items()}
    return {}


def digits_figures(model, num_per_class=100, seed=1):
    """FID of 1,000 samples (100 of each digit) against the test split and
    the classifier's accuracy per requested digit, for each sampler at 20
    velocity evaluations, and Euler with guidance."""
    from zoo.data import digits
    from zoo.metrics import fid

    test, _ = digits("test")
    labels = np.repeat(np.arange(10), num_per_class).astype(np.int32)
    figures = {"fid_train_vs_test_floor": round(float(fid(digits("train")[0], test)), 3)}
    settings = [("euler", 20, None), ("heun", 10, None), ("midpoint", 10, None),
                ("euler", 20, 2.0)]
    for sampler, steps, guidance in settings:
        x = model.sample(len(labels), steps=steps, sampler=sampler, labels=labels,
                         guidance_scale=guidance, seed=seed, verbose=False)
        per_label = checks.digits_accuracy(x, labels)
        key = f"{sampler}_{steps}" + (f"_guidance_{guidance:g}" if guidance else "")
        figures[key] = {"fid": round(float(fid(test, x)), 3),
                        "accuracy": round(float(np.mean(per_label)), 4),
                        "accuracy_per_label": [round(float(a), 3) for a in per_label]}
    return figures


def build(name, out=None, any_backend=False):
    """Trains recipe `name` and saves it as a preset; returns the directory."""
    if name not in RECIPES:
        raise ValueError(f"Unknown preset recipe {name!r}; choose from {sorted(RECIPES)}.")
    recipe, backend = RECIPES[name]
    if backend_name() != backend and not any_backend:
        raise SystemExit(
            f"{name} is trained on {backend}: run\n  KERAS_BACKEND={backend} python -m "
            f"zoo.presets.build {name}\n(or pass --any-backend --out DIR)."
        )
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    model, meta, (evaluation, kwargs), probe = recipe()
    seconds = time.perf_counter() - start
    figures = checks.EVALUATIONS[evaluation](model, **kwargs)
    meta["training"]["seconds"] = round(seconds, 1)
    meta["name"] = name
    env = "OMP_NUM_THREADS=1 " if backend == "torch" or name in ONE_THREAD else ""
    meta["command"] = f"{env}KERAS_BACKEND={backend} python -m zoo.presets.build {name}"
    meta["quality"] = {
        "evaluation": evaluation,
        "kwargs": kwargs,
        "figures": figures,
        "checks": quality_checks(evaluation, figures),
        "more_figures": fuller_figures(name, model),
    }
    meta["goldens"] = checks.record_goldens(model, probe)
    directory = out or os.path.join(BUILTIN_DIR, name)
    model.save_to_preset(directory, metadata=meta, overwrite=True)
    print(f"{name}: trained on {backend_name()} in {seconds:.0f} s; {figures}; "
          f"more: {meta['quality']['more_figures']}; saved to {directory}")
    return directory


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m zoo.presets.build", description=__doc__.splitlines()[0]
    )
    parser.add_argument("name", help=f"one of {', '.join(RECIPES)}, or 'all' to list commands")
    parser.add_argument("--out", help="preset directory (default: the built-in location)")
    parser.add_argument("--any-backend", action="store_true",
                        help="train on the current backend even if the recipe names another")
    args = parser.parse_args(argv)
    if args.name == "all":
        for name, (_, backend) in RECIPES.items():
            env = "OMP_NUM_THREADS=1 " if backend == "torch" or name in ONE_THREAD else ""
            print(f"{env}KERAS_BACKEND={backend} python -m zoo.presets.build {name}")
        return 0
    if args.name not in RECIPES:
        parser.error(f"unknown preset {args.name!r}; choose from {', '.join(RECIPES)}")
    if args.any_backend and not args.out:
        parser.error("--any-backend needs --out, so that the shipped preset is not replaced")
    build(args.name, args.out, args.any_backend)
    return 0


if __name__ == "__main__":
    sys.exit(main())
