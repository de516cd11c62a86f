"""zoo.diffusion.LatentDiffusion: training in a frozen VAE's latent space
through `fit`, the latent scale, the frozen autoencoder, equal samples
after a preset and a `.keras` reload, the likelihood bound against the
VAE's own with an exact Gaussian prior, a VQVAE's latent grid, and bad
input."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from zoo.data import digits
from zoo.diffusion import LatentDiffusion
from zoo.vae import VAE, VQVAE, ConditionalVAE

TINY = dict(hidden_units=32, num_blocks=1)


@pytest.fixture(scope="module")
def data():
    images, labels = digits("train")
    return images[:128], labels[:128].astype("int32")


@pytest.fixture(scope="module")
def vae(data):
    # Nothing here needs a good autoencoder, only a fixed one that counts as
    # trained: its step counter stands for a `fit` (which takes longer, on
    # JAX above all, than every test of this file).
    model = VAE((8, 8, 1), latent_dim=4, num_levels=17, filters=8, hidden_units=(32,), seed=0)
    model.train_steps.assign(1)
    return model


def test_fit_scale_frozen_autoencoder_and_reload(vae, data, tmp_path):
    x, y = data
    vae_weights = [w.copy() for w in vae.get_weights()]
    model = LatentDiffusion(vae, num_classes=10, latents="mean", seed=1, **TINY)
    ae_weights = [w.copy() for w in model.autoencoder.get_weights()]
    assert model.scaling_factor is None
    model.compile()
    # Only the denoiser trains: the optimizer holds none of the autoencoder.
    assert len(model.trainable_variables) == len(model.diffusion.denoiser.trainable_variables)
    history = model.fit(x, y, batch_size=64, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))

    # SD's scale: 1 / std of all latent entries (here every example's
    # posterior mean, as `latents="mean"` asks).
    mean, _ = vae.encode(x)
    np.testing.assert_allclose(model.scaling_factor, 1.0 / np.std(mean), rtol=1e-4)
    for before, after in zip(ae_weights, model.autoencoder.get_weights()):
        np.testing.assert_array_equal(before, after)
    for before, after in zip(vae_weights, vae.get_weights()):
        np.testing.assert_array_equal(before, after)

    # Eager sampling loops: compiling three models' loops costs more than
    # three steps.
    kwargs = dict(steps=3, labels=np.arange(4), guidance_scale=2.0, seed=5, jit_compile=False)
    samples, latents = model.sample(4, return_latents=True, **kwargs)
    assert samples.shape == (4, 8, 8, 1) and samples.dtype == np.float32
    assert latents.shape == (4, 4)
    assert np.all(np.abs(samples) <= 1.0)
    np.testing.assert_array_equal(model.decode(latents), samples)
    assert not np.array_equal(model.sample(4, **{**kwargs, "seed": 6}), samples)

    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.get_config() == model.get_config()
    assert loaded.scaling_factor == model.scaling_factor
    np.testing.assert_array_equal(loaded.sample(4, **kwargs), samples)
    model.save_to_preset(str(tmp_path / "preset"))
    preset = LatentDiffusion.from_preset(str(tmp_path / "preset"))
    np.testing.assert_array_equal(preset.sample(4, **kwargs), samples)
    # The preset's autoencoder can start a new latent model: trained, frozen.
    assert len(preset.trainable_variables) == len(preset.diffusion.denoiser.trainable_variables)


def test_adapt_draws_latents_from_the_posterior(vae, data):
    x = data[0]
    model = LatentDiffusion(vae, adapt_examples=100, seed=2, **TINY)
    model.adapt(x)
    mean, log_var = vae.encode(x)
    # A draw z ~ q(z|x) per example: its std is the posterior mean's
    # spread plus the posterior's own variance.
    expected = 1.0 / np.sqrt(np.var(mean) + np.mean(np.exp(log_var)))
    np.testing.assert_allclose(model.scaling_factor, expected, rtol=0.1)
    assert abs(model.scaling_factor - 1.0 / np.std(mean)) > 0.02 * model.scaling_factor


@keras.saving.register_keras_serializable(package="zoo_tests")
class GaussianVelocity(keras.layers.Layer):
    """The exact rectified-flow velocity of N(0, s^2 I) data, `[x, 1000 t]`
    in: the flow's density at t = 0 is that Gaussian."""

    def __init__(self, s, **kwargs):
        super().__init__(**kwargs)
        self.s = s

    def call(self, inputs):
        x, t = inputs
        t = ops.reshape(t, (-1, 1)) / 1000.0
        var = (1.0 - t) ** 2 * self.s**2 + t**2
        return (t - (1.0 - t) * self.s**2) / var * x

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "s": self.s}


def test_log_prob_is_the_vae_bound_under_the_change_of_variables(vae, data):
    # Scaled latents s z with the density N(0, s^2 I) are z ~ N(0, I), the
    # VAE's own prior: with the same draws both bounds agree, which needs
    # the `d log s` of the change of variables.
    x = data[0][:16]
    z, t = keras.Input((4,)), keras.Input(())
    denoiser = keras.Model([z, t], GaussianVelocity(2.0)([z, t]))
    model = LatentDiffusion(vae, scaling_factor=2.0, denoiser=denoiser, ema_decay=None)
    ours = model.log_prob(x, seed=3, steps=16)
    theirs = vae.log_prob(x, num_importance_samples=1, seed=3)
    np.testing.assert_allclose(ours, theirs, atol=0.05)
    assert ours.shape == (16,) and ours.dtype == np.float64


@pytest.mark.slow
def test_vqvae_latent_grid_with_ddpm(data, tmp_path):
    x = data[0][:64]
    vq = VQVAE((8, 8, 1), num_codes=16, code_dim=4, num_levels=17, ema_decay=0.9,
               filters=8, hidden_units=(32,), seed=0)
    vq.compile()
    vq.fit(x, batch_size=64, epochs=1, verbose=0)
    model = LatentDiffusion(vq, "ddpm", timesteps=50, denoiser="dit", seed=0,
                            denoiser_options={"patch_size": 2, "hidden_dim": 16, "depth": 1,
                                              "num_heads": 2})
    assert model.latent_shape == vq.latent_shape
    model.compile()
    model.fit(x, batch_size=64, epochs=1, verbose=0)
    samples = model.sample(2, steps=2, seed=0)
    assert samples.shape == (2, 8, 8, 1) and np.all(np.isfinite(samples))
    with pytest.raises(ValueError, match="VQVAE.*no density"):
        model.log_prob(x[:2])


def test_bad_input(vae, data):
    x, _ = data
    for bad in (keras.layers.Dense(3), "not_a_preset_name", 3):
        with pytest.raises(ValueError, match="autoencoder|preset"):
            LatentDiffusion(bad)
    with pytest.raises(ValueError, match="ConditionalVAE"):
        LatentDiffusion(ConditionalVAE((8, 8, 1), 10, 4, filters=8, hidden_units=(32,)))
    unbuilt = VAE((8, 8, 1), 4, filters=8, hidden_units=(32,))
    unbuilt.built = False
    with pytest.raises(ValueError, match="not built"):
        LatentDiffusion(unbuilt)
    untrained = LatentDiffusion(VAE((8, 8, 1), 4, filters=8, hidden_units=(32,)), **TINY)
    untrained.compile()
    with pytest.raises(ValueError, match="never been trained"):
        untrained.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`diffusion`"):
        LatentDiffusion(vae, "gan")
    with pytest.raises(ValueError, match=r"Unknown argument\(s\) \['schedule'\]"):
        LatentDiffusion(vae, schedule="cosine")
    with pytest.raises(ValueError, match="`scaling_factor`"):
        LatentDiffusion(vae, scaling_factor=-1.0)

    model = LatentDiffusion(vae, **TINY)
    model.compile()
    wrong = np.zeros((8, 16), "float32")
    # Both shapes named, whether the scale is computed first or not.
    with pytest.raises(ValueError, match=r"autoencoder.*\(8, 8, 1\).*\(8, 16\)"):
        model.fit(wrong, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"autoencoder.*\(8, 8, 1\).*\(8, 16\)"):
        model.adapt(wrong)
    with pytest.raises(ValueError, match="sample.*`fit`"):
        model.sample(2)
    with pytest.raises(ValueError, match="one-shot iterator"):
        model.fit((b for b in [x[:8]]), epochs=1, verbose=0)
    fixed = LatentDiffusion(vae, scaling_factor=1.0, **TINY)
    fixed.compile()
    with pytest.raises(ValueError, match=r"autoencoder.*\(8, 8, 1\).*\(8, 16\)"):
        fixed.fit(wrong, epochs=1, verbose=0)
    for steps in (0, 2.5, "3"):
        with pytest.raises(ValueError, match="`steps`"):
            fixed.sample(2, steps=steps)
    with pytest.raises(ValueError, match="`guidance_scale`.*unconditional"):
        fixed.sample(2, steps=2, guidance_scale=2.0)
    with pytest.raises(ValueError, match="`sampler`"):
        fixed.sample(2, steps=2, sampler="ddim")
