"""Recipes of the diffusion family's built-in presets, in the form
`zoo.presets.build` takes: `recipe() -> (model, metadata, (evaluation,
kwargs), golden probe)`.

    KERAS_BACKEND=jax python -m zoo.presets.build fm_ring
    KERAS_BACKEND=jax python -m zoo.presets.build fm_digits

(`zoo.presets.build` lists these recipes; `python -m zoo.diffusion.presets
fm_ring` does the same.) `digits_model` and `DIGITS_TRAINING` are also what
`benchmarks/diffusion_digits.py` trains its DDPM with, so that the DDPM and
the `fm_digits` flow it is compared with differ only in their objective.
"""

import sys

import keras

# name: (recipe, the backend it is trained on); see RECIPES in build.py.
BACKENDS = {"fm_ring": "jax", "fm_digits": "jax"}

# The digits denoiser: a U-Net of 16 channels (multipliers 1, 2): about
# 125,000 parameters, so that the preset (weights and their average) stays
# near 1 MB.
DIGITS_UNET = {"channels": 16, "channel_multipliers": (1, 2), "num_res_blocks": 1}
DIGITS_TRAINING = {"epochs": 40, "batch_size": 64, "learning_rate": 2e-3}


def digits_model(cls, **kwargs):
    """A class-conditional `cls` (`FlowMatching` or `DDPM`) for the 8x8
    digits with the presets' U-Net, seeded."""
    return cls((8, 8, 1), num_classes=10, seed=0, **DIGITS_UNET, **kwargs)


def digits_optimizer(num_images):
    """Adam with cosine decay over the whole run (to 5 % of the rate)."""
    settings = DIGITS_TRAINING
    steps = settings["epochs"] * -(-num_images // settings["batch_size"])
    schedule = keras.optimizers.schedules.CosineDecay(settings["learning_rate"], steps,
                                                      alpha=0.05)
    return keras.optimizers.Adam(schedule)


def fm_ring():
    from zoo.data import Ring
    from zoo.diffusion import FlowMatching

    epochs, batch_size = 10, 256
    data = Ring(std=0.1).sample(32768, seed=0)
    model = FlowMatching((2,), hidden_units=128, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(data, batch_size=batch_size, epochs=epochs, verbose=2)
    return model, {
        "dataset": "Ring(n_modes=8, radius=2, std=0.1) from zoo.data",
        "description": "Flow matching (rectified flow, uniform times, residual MLP, EMA) on "
        "the ring of 8 Gaussians; sampled with Euler, 20 steps.",
        "training": {"epochs": epochs, "batch_size": batch_size, "optimizer": "Adam(1e-3)"},
    }, ("ring_diffusion", {"sampler": "euler", "steps": 20}), "denoiser"


def fm_digits():
    from zoo.data import digits
    from zoo.diffusion import FlowMatching

    images, labels = digits("train")
    settings = DIGITS_TRAINING
    model = digits_model(FlowMatching)
    model.compile(optimizer=digits_optimizer(len(images)))
    model.fit(images, labels, batch_size=settings["batch_size"], epochs=settings["epochs"],
              verbose=2)
    return model, {
        "dataset": "zoo.data.digits (8x8, 17 levels in [-1, 1]), train split (1,437 images)",
        "description": "Class-conditional flow matching (rectified flow, uniform times, "
        "U-Net of 16 channels, EMA, label dropout 0.1 for classifier-free guidance) on "
        "the 8x8 digits; sample(n, labels=...) draws the requested digits.",
        "training": {"epochs": settings["epochs"], "batch_size": settings["batch_size"],
                     "optimizer": f"Adam({settings['learning_rate']:g}), cosine decay to 5 %"},
    }, ("digits_flow", {}), "flow_sample"


RECIPES = {"fm_ring": fm_ring, "fm_digits": fm_digits}


def main(argv=None):
    from zoo.presets import build

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in RECIPES:
        raise SystemExit(f"usage: python -m zoo.diffusion.presets {{{','.join(RECIPES)}}}")
    for name, recipe in RECIPES.items():
        build.RECIPES.setdefault(name, (recipe, BACKENDS[name]))
    return build.main(argv)


if __name__ == "__main__":
    sys.exit(main())
