"""Recipes of the diffusion family's built-in presets, in the form
`zoo.presets.build` takes: `recipe() -> (model, metadata, (evaluation,
kwargs), golden probe)`.

    KERAS_BACKEND=jax python -m zoo.presets.build fm_ring

(`zoo.presets.build` lists these recipes; `python -m zoo.diffusion.presets
fm_ring` does the same.)
"""

import sys

import keras

# name: (recipe, the backend it is trained on); see RECIPES in build.py.
BACKENDS = {"fm_ring": "jax"}


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


RECIPES = {"fm_ring": fm_ring}


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
