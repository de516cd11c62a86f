"""Tests of the GAN family: GAN, WGANGP and ConditionalGAN, on every backend."""

import os

import keras
import numpy as np
import pytest
from keras import ops

from tests.helpers import assert_trees_close, check_model
from zoo.gan import GAN, WGANGP, ConditionalGAN
from zoo.layers import SpectralNorm, networks

TINY = {"hidden_units": (16, 16)}
TINY_CONV = {"filters": 8}


def _vectors(n=64, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 2)).astype("float32")


def _images(n=32, shape=(8, 8, 1), seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, *shape)).astype("float32")


def _labels(n=32, num_classes=3, seed=0):
    return np.random.default_rng(seed).integers(0, num_classes, size=n).astype("int32")


def _values(layer):
    return [np.array(v.numpy()) for v in layer.weights]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


# ----------------------------------------------------------------------
# The shared protocol checks.


@pytest.fixture(scope="module")
def trained_gan(tmp_path_factory):
    """A GAN on vectors through the shared checks: hinge loss, R1 penalty and
    spectral normalization; trained, so the tests below share one compile."""
    return check_model(
        lambda: GAN((2,), 4, loss="hinge", r1_weight=1.0, spectral_norm=True, seed=1,
                    **TINY),
        _vectors(), tmp_path_factory.mktemp("gan"), sample_shape=(2,),
    )


def test_gan_protocol_vectors(trained_gan):
    assert int(trained_gan.optimizer.iterations.numpy()) == 8  # 2 epochs of 4 batches


def test_gan_protocol_images(tmp_path):
    check_model(lambda: GAN((8, 8, 1), 8, label_smoothing=0.1, seed=1, **TINY_CONV),
                _images(), tmp_path, sample_shape=(8, 8, 1), epochs=1)


def test_wgan_gp_protocol(tmp_path):
    model = check_model(lambda: WGANGP((8, 8, 1), 8, critic_steps=2, seed=1, **TINY_CONV),
                        _images(), tmp_path, sample_shape=(8, 8, 1), epochs=1)
    # 32 images in batches of 16: two steps, each with two critic updates.
    assert int(model.optimizer["discriminator"].iterations.numpy()) == 4
    assert int(model.optimizer["generator"].iterations.numpy()) == 2


def test_conditional_gan_protocol(tmp_path):
    check_model(
        lambda: ConditionalGAN((8, 8, 1), 3, 8, seed=1, **TINY_CONV),
        (_images(), _labels()), tmp_path, sample_shape=(8, 8, 1), epochs=1,
        sample_kwargs={"labels": [0, 1, 2, 1]},
    )


def test_custom_networks_round_trip(tmp_path):
    def make():
        generator = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(8, activation="relu"),
             keras.layers.Dense(2)], name="my_generator")
        discriminator = keras.Sequential(
            [keras.Input((2,)), keras.layers.Dense(8, activation="relu"),
             keras.layers.Dense(1)], name="my_discriminator")
        return GAN((2,), 3, generator=generator, discriminator=discriminator, seed=1)

    model = check_model(make, _vectors(), tmp_path, sample_shape=(2,), epochs=1)
    assert model.generator.name == "my_generator"
    assert model.get_config()["generator"] is not None


# ----------------------------------------------------------------------
# Networks built from data_shape.


def test_default_networks_32x32x3():
    model = GAN((32, 32, 3), 8, filters=4, seed=0)
    assert model.num_stages == 3
    assert model.generator.output_shape == (None, 32, 32, 3)
    assert model.discriminator.output_shape == (None, 1)
    samples = model.sample(2, seed=0)
    assert samples.shape == (2, 32, 32, 3)
    assert samples.min() >= -1 and samples.max() <= 1  # tanh output
    logits = model.critic(ops.convert_to_tensor(samples))
    assert ops.convert_to_numpy(logits).shape == (2,)


def test_data_shape_validation():
    with pytest.raises(ValueError, match="num_stages=3"):
        GAN((12, 12, 1), num_stages=3)
    with pytest.raises(ValueError, match="data_shape"):
        GAN((8, 8))
    with pytest.raises(ValueError, match="data_shape"):
        GAN((0,))
    with pytest.raises(ValueError, match="num_stages"):
        GAN((2,), num_stages=1)
    # The automatic choice always fits: it stops before a side drops below 4.
    assert GAN((12, 12, 1), 4, **TINY_CONV).num_stages == 1
    assert GAN((7, 7, 1), 4, **TINY_CONV).num_stages == 0


def test_argument_validation():
    with pytest.raises(ValueError, match="`loss` must be one of"):
        GAN((2,), loss="wasserstein")
    with pytest.raises(ValueError, match="label_smoothing"):
        GAN((2,), loss="hinge", label_smoothing=0.1)
    with pytest.raises(ValueError, match="r1_weight"):
        GAN((2,), r1_weight=-1.0)
    with pytest.raises(ValueError, match="critic_steps"):
        WGANGP((2,), critic_steps=0)
    with pytest.raises(ValueError, match="latent_dim"):
        GAN((2,), latent_dim=0)
    with pytest.raises(ValueError, match="ConditionalGAN"):
        GAN((2,), num_classes=3)
    with pytest.raises(ValueError, match="num_classes"):
        ConditionalGAN((2,), num_classes=0)
    generator = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="output shape"):
        GAN((2,), 4, generator=generator)
    with pytest.raises(ValueError, match="latent_dim"):
        GAN((3,), 5, generator=generator)


# ----------------------------------------------------------------------
# Training steps.


def test_each_update_changes_only_its_player():
    # With one player's learning rate at 0, a whole compiled step (both
    # updates) must leave that player exactly as it was: the other player's
    # update never touches it. Checked both ways.
    model = GAN((2,), 4, seed=0, **TINY)
    for frozen, moving in (("generator", "discriminator"), ("discriminator", "generator")):
        rates = {frozen: 0.0, moving: 1e-3}
        model.compile(optimizer={p: keras.optimizers.Adam(r) for p, r in rates.items()})
        frozen_before = _values(getattr(model, frozen))
        moving_before = _values(getattr(model, moving))
        model.fit(_vectors(16), batch_size=16, epochs=1, verbose=0)
        assert _same(_values(getattr(model, frozen)), frozen_before), frozen
        assert not _same(_values(getattr(model, moving)), moving_before), moving


def _constant_generator(latent_dim, value):
    """A generator whose output is `value` whatever z: losses become exact."""
    generator = keras.Sequential([
        keras.Input((latent_dim,)),
        keras.layers.Dense(2, kernel_initializer="zeros",
                           bias_initializer=keras.initializers.Constant(value)),
    ])
    return generator


def _linear_discriminator(weights, bias):
    discriminator = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    discriminator.layers[0].set_weights(
        [np.asarray(weights, "float32").reshape(2, 1), np.asarray([bias], "float32")])
    return discriminator


@pytest.mark.parametrize("loss", ["non_saturating", "hinge", "least_squares"])
def test_losses_match_reference(loss):
    w, b = np.array([0.5, -1.0]), 0.25
    smoothing = 0.0 if loss == "hinge" else 0.1
    model = GAN((2,), 3, loss=loss, label_smoothing=smoothing, r1_weight=2.0,
                generator=_constant_generator(3, 0.3),
                discriminator=_linear_discriminator(w, b))
    real = _vectors(8)
    real_logits = real @ w + b
    fake_logit = np.full(8, 0.3 * w.sum() + b)
    softplus = lambda t: np.log1p(np.exp(t))  # noqa: E731
    t = 1.0 - smoothing
    if loss == "non_saturating":
        d = np.mean(t * softplus(-real_logits) + (1 - t) * softplus(real_logits))
        d += np.mean(softplus(fake_logit))
        g = np.mean(softplus(-fake_logit))
    elif loss == "hinge":
        d = np.mean(np.maximum(0, 1 - real_logits)) + np.mean(np.maximum(0, 1 + fake_logit))
        g = -np.mean(fake_logit)
    else:
        d = 0.5 * np.mean((real_logits - t) ** 2) + 0.5 * np.mean(fake_logit**2)
        g = 0.5 * np.mean((fake_logit - 1) ** 2)
    d += 2.0 / 2 * np.sum(w**2)  # R1: the gradient of a linear critic is w
    got_d = float(ops.convert_to_numpy(model.discriminator_loss(ops.convert_to_tensor(real))))
    got_g = float(ops.convert_to_numpy(model.generator_loss(8)))
    np.testing.assert_allclose(got_d, d, rtol=1e-5)
    np.testing.assert_allclose(got_g, g, rtol=1e-5)


def test_gradient_penalty_matches_reference():
    # A fixed two-layer critic D(x) = v . tanh(W x + c) + d, whose input
    # gradient is W^T (v * (1 - tanh^2)).
    rng = np.random.default_rng(0)
    W = rng.normal(size=(2, 5)).astype("float32")
    c = rng.normal(size=5).astype("float32")
    v = rng.normal(size=(5, 1)).astype("float32")
    critic = keras.Sequential([
        keras.Input((2,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(1)])
    critic.layers[0].set_weights([W, c])
    critic.layers[1].set_weights([v, np.zeros(1, "float32")])
    model = WGANGP((2,), 3, discriminator=critic, **TINY)

    real, fake = _vectors(16, seed=1), _vectors(16, seed=2) * 3
    eps = rng.uniform(size=16).astype("float32")
    x_hat = eps[:, None] * real + (1 - eps[:, None]) * fake
    h = np.tanh(x_hat @ W + c)
    grad = ((1 - h**2) * v[:, 0]) @ W.T
    expected = np.mean((np.linalg.norm(grad, axis=1) - 1) ** 2)

    got = model.gradient_penalty(ops.convert_to_tensor(real), ops.convert_to_tensor(fake), eps)
    np.testing.assert_allclose(float(ops.convert_to_numpy(got)), expected, rtol=1e-4)
    assert model.gp_weight == 10.0 and model.critic_steps == 5


def test_evaluate_reports_losses_without_updating(trained_gan):
    model = trained_gan
    g_before, d_before = _values(model.generator), _values(model.discriminator)
    logs = model.evaluate(_vectors(), batch_size=32, verbose=0, return_dict=True)
    assert set(logs) >= {"d_loss", "g_loss", "loss"}
    assert all(np.isfinite(v) for v in logs.values())
    assert _same(_values(model.generator), g_before)
    assert _same(_values(model.discriminator), d_before)


def test_default_optimizers_and_override():
    def settings(model, player):
        opt = model.optimizer[player]
        return float(opt.learning_rate), opt.beta_1, opt.beta_2

    models = {
        "gan_images": GAN((8, 8, 1), **TINY_CONV), "gan_vectors": GAN((2,), **TINY),
        "wgan_images": WGANGP((8, 8, 1), **TINY_CONV), "wgan_vectors": WGANGP((2,), **TINY),
    }
    expected = {
        "gan_images": (2e-4, 0.5, 0.999), "gan_vectors": (1e-3, 0.0, 0.9),
        "wgan_images": (1e-4, 0.0, 0.9), "wgan_vectors": (1e-3, 0.0, 0.9),
    }
    for name, model in models.items():
        model.compile()
        for player in ("generator", "discriminator"):
            np.testing.assert_allclose(settings(model, player), expected[name], rtol=1e-6,
                                       err_msg=f"{name} {player}")
    gan = models["gan_vectors"]
    gan.compile(optimizer={"generator": keras.optimizers.SGD(0.1),
                           "discriminator": keras.optimizers.SGD(0.2)})
    np.testing.assert_allclose(float(gan.optimizer["discriminator"].learning_rate), 0.2)


def test_default_latent_dim():
    assert GAN((2,), **TINY).latent_dim == 2
    assert GAN((100,), **TINY).latent_dim == 64
    assert GAN((8, 8, 1), **TINY_CONV).latent_dim == 64


def test_sample_uses_the_weight_average(trained_gan):
    model = trained_gan
    assert model.ema_generator.trainable_weights == []
    fresh = GAN((2,), 4, loss="hinge", r1_weight=1.0, spectral_norm=True, seed=1, **TINY)
    initial = _values(fresh.generator)
    assert _same(_values(fresh.ema_generator), initial)
    average, current = _values(model.ema_generator), _values(model.generator)
    # The average moved from the initial weights but lags the generator.
    assert not _same(average, initial) and not _same(average, current)
    z = keras.random.normal((4, 4), seed=3)
    np.testing.assert_allclose(
        model.sample(4, seed=3), ops.convert_to_numpy(model.ema_generator(z)), rtol=1e-5, atol=1e-6)

    plain = GAN((2,), 4, ema_momentum=None, seed=0, **TINY)
    assert plain.ema_generator is None
    np.testing.assert_allclose(
        plain.sample(4, seed=3), ops.convert_to_numpy(plain.generator(z)), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="ema_momentum"):
        GAN((2,), ema_momentum=1.0)


def test_keras_round_trip_resumes_training(trained_gan, tmp_path):
    data = _vectors(64)
    model = trained_gan
    path = os.path.join(str(tmp_path), "gan.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    # Both continue from the same weights, optimizer state and noise.
    history = loaded.fit(data, batch_size=16, epochs=1, verbose=0, shuffle=False)
    model.fit(data, batch_size=16, epochs=1, verbose=0, shuffle=False)
    assert np.isfinite(history.history["loss"][0])
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    assert_trees_close(_values(loaded), _values(model), atol=1e-5, rtol=1e-4,
                       what="weights after resumed training")


def test_sampling_does_not_change_training_noise():
    model = GAN((2,), 4, seed=0, **TINY)
    state = np.array(model.seed_generator.state.numpy())
    model.sample(8)
    model.sample(8, seed=1)
    np.testing.assert_array_equal(model.seed_generator.state.numpy(), state)


# ----------------------------------------------------------------------
# Conditional GAN.


def test_conditional_sampling_labels():
    model = ConditionalGAN((2,), 4, 3, seed=0, **TINY)
    assert model.sample(4, labels=2, seed=0).shape == (4, 2)
    assert model.sample(4, labels=np.array([0, 3, 1, 1]), seed=0).shape == (4, 2)
    assert model.sample(4, seed=0).shape == (4, 2)
    # Same z, different class: the label reaches the generator.
    assert not np.allclose(model.sample(4, labels=0, seed=0), model.sample(4, labels=3, seed=0))
    with pytest.raises(ValueError, match=r"\[0, 4\).*\[4\]"):
        model.sample(2, labels=[1, 4])
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        model.sample(2, labels=-1)
    with pytest.raises(ValueError, match="shape"):
        model.sample(3, labels=[0, 1])
    with pytest.raises(ValueError, match="integers"):
        model.sample(2, labels=[0.5, 1.0])


def test_conditional_gan_needs_labels():
    model = ConditionalGAN((2,), 3, 4, seed=0, **TINY)
    model.compile()
    with pytest.raises(ValueError, match="fit\\(data, labels\\)"):
        model.fit(_vectors(16), batch_size=16, epochs=1, verbose=0)


def test_conditional_gan_trains_eagerly():
    # `run_eagerly=True`: Keras's JAX trainer then hands the step NumPy
    # batches, which the core makes tensors before `[x, labels]` meets a layer.
    model = ConditionalGAN((2,), 3, 4, seed=0, **TINY)
    model.compile(run_eagerly=True)
    labels = np.arange(16) % 3
    history = model.fit(_vectors(16), labels, batch_size=8, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_projection_discriminator_uses_labels():
    model = ConditionalGAN((2,), 3, 4, seed=0, **TINY)
    x = ops.convert_to_tensor(_vectors(4))
    a = ops.convert_to_numpy(model.critic(x, ops.convert_to_tensor(np.zeros(4, "int32"))))
    b = ops.convert_to_numpy(model.critic(x, ops.convert_to_tensor(np.ones(4, "int32"))))
    assert a.shape == (4,) and not np.allclose(a, b)


# ----------------------------------------------------------------------
# Spectral normalization.


def test_spectral_norm_normalizes_without_touching_the_kernel():
    layer = SpectralNorm(keras.layers.Dense(4))
    x = _vectors(8)
    layer(x)
    kernel = np.array(layer.layer.kernel.numpy())
    for _ in range(30):
        y = layer(x, training=True)
    np.testing.assert_array_equal(layer.layer.kernel.numpy(), kernel)
    sigma = np.linalg.svd(kernel, compute_uv=False)[0]
    bias = layer.layer.bias.numpy()
    np.testing.assert_allclose(ops.convert_to_numpy(y), x @ (kernel / sigma) + bias,
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="activation"):
        SpectralNorm(keras.layers.Dense(3, activation="relu"))(x)


def test_spectral_norm_discriminator_is_1_lipschitz_per_layer():
    d = networks.mlp_discriminator((2,), (16, 16), spectral_norm=True, seed=0)
    # Each training call is one power iteration; how many it takes depends
    # on the gap between the two largest singular values.
    for _ in range(100):
        d(_vectors(8), training=True)
    for layer in d.layers:
        if isinstance(layer, SpectralNorm):
            kernel = layer.layer.kernel.numpy()
            sigma = float(ops.convert_to_numpy(layer._sigma(False)))
            np.testing.assert_allclose(sigma, np.linalg.svd(kernel, compute_uv=False)[0],
                                       rtol=1e-2)
