"""The VAE family: protocol checks plus the bounds, KL, straight-through and
codebook checks of the issue. Tiny networks keep each backend under a minute."""

import math

import keras
import numpy as np
import pytest
from keras import ops
from scipy import stats

from tests.helpers import check_model
from zoo.data import digits
from zoo.layers import likelihoods
from zoo.layers.vector_quantizer import VectorQuantizer
from zoo.vae import VAE, VQVAE, ConditionalVAE

TINY = {"filters": 4, "hidden_units": (16,)}


@pytest.fixture(scope="module")
def digit_data():
    images, labels = digits("train")
    return images[:64], labels[:64]


def _mlp(input_dim, output_dim, name):
    return keras.Sequential(
        [keras.Input((input_dim,)), keras.layers.Dense(16, activation="tanh"),
         keras.layers.Dense(output_dim)],
        name=name,
    )


# ----------------------------------------------------------------------
# The shared protocol.


def test_vae_protocol_images_warmup_and_evaluate(digit_data, tmp_path):
    x = digit_data[0]
    model = check_model(
        lambda: VAE((8, 8, 1), 2, num_levels=17, beta=2.0, kl_warmup_steps=16, seed=1, **TINY),
        x, tmp_path, sample_shape=(8, 8, 1), loss_should_fall=True,
    )
    # KL warm-up: 2 epochs of 4 batches; the weight reaches beta at step 16.
    assert int(model.train_steps.numpy()) == 8
    assert abs(float(model.kl_weight()) - 2.0 * 9 / 16) < 1e-6
    # `evaluate` reports the same terms and updates nothing.
    state = [v.numpy().copy() for v in model.weights + model.optimizer.variables]
    logs = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    assert set(logs) == {"loss", "reconstruction_loss", "kl_loss"}
    np.testing.assert_allclose(
        logs["loss"], logs["reconstruction_loss"] + 2.0 * 9 / 16 * logs["kl_loss"], rtol=1e-4
    )
    for v, s in zip(model.weights + model.optimizer.variables, state):
        np.testing.assert_array_equal(v.numpy(), s)
    # `mode="sample"` draws from the discretized likelihood: grid values.
    draws = model.sample(3, seed=0, mode="sample")
    np.testing.assert_allclose(np.round((draws + 1) * 8), (draws + 1) * 8, atol=1e-5)


def test_vae_protocol_vectors_custom_networks(digit_data, tmp_path):
    # Custom encoder and decoder go through the config and the .keras file;
    # a binomial over 17 levels is the Bernoulli family's honest likelihood.
    # The unseeded custom networks start wherever the global generator is,
    # so a learning rate of 1e-2 makes the fall (~90 nats in 8 steps) far
    # larger than the ELBO's noise (a few nats at Adam's default 1e-3).
    vectors = digit_data[0].reshape(-1, 64)
    check_model(
        lambda: VAE(
            (64,), 3, likelihood="bernoulli", num_levels=17, seed=2,
            encoder=_mlp(64, 6, "my_encoder"), decoder=_mlp(3, 64, "my_decoder"),
        ),
        vectors, tmp_path, sample_shape=(64,), loss_should_fall=True,
        compile_kwargs={"optimizer": keras.optimizers.Adam(1e-2)},
    )


def test_conditional_vae_protocol(digit_data, tmp_path):
    # Vectors (MLPs): the conv networks are covered above, and MLPs keep
    # JAX's compile times short.
    x, y = digit_data[0].reshape(-1, 64), digit_data[1]
    model = check_model(
        lambda: ConditionalVAE((64,), 10, 2, num_levels=17, hidden_units=(16,), seed=3),
        (x, y), tmp_path, sample_shape=(64,),
        sample_kwargs={"labels": 7}, loss_should_fall=True,
    )
    # The logged terms are those of the very draws the updates used (one
    # more epoch reuses the compiled step).
    logs = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history
    np.testing.assert_allclose(
        logs["loss"][0], logs["reconstruction_loss"][0] + logs["kl_loss"][0], rtol=1e-5
    )
    assert model.log_prob(x[:5], y[:5], num_importance_samples=3, seed=0).shape == (5,)
    assert model.sample(12, seed=0).shape == (12, 64)  # classes in turn
    with pytest.raises(ValueError, match="labels"):
        model.fit(x, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="labels"):
        model.sample(2, labels=[3, 10])


def test_vqvae_protocol_ema(digit_data, tmp_path):
    model = check_model(
        lambda: VQVAE((8, 8, 1), 8, 4, num_levels=17, ema_decay=0.9, seed=4, **TINY),
        digit_data[0], tmp_path, sample_shape=(8, 8, 1), loss_should_fall=True,
    )
    assert set(model.log_names()) == {
        "loss", "reconstruction_loss", "commitment_loss", "perplexity", "usage"
    }
    x = digit_data[0]
    logs = model.fit(x, batch_size=16, epochs=1, verbose=0).history
    np.testing.assert_allclose(
        logs["loss"][0],
        logs["reconstruction_loss"][0] + 0.25 * logs["commitment_loss"][0], rtol=1e-5,
    )
    # Sample weights weigh each example's terms as Keras weighs losses.
    # (Keras drops `sample_weight` when `y` is None; VQVAE ignores `y`.)
    plain = model.evaluate(x, batch_size=64, verbose=0, return_dict=True)
    doubled = model.evaluate(x, np.zeros(64), sample_weight=np.full(64, 2.0),
                             batch_size=64, verbose=0, return_dict=True)
    np.testing.assert_allclose(doubled["reconstruction_loss"],
                               2 * plain["reconstruction_loss"], rtol=1e-5)
    codes = model.encode(x)
    assert codes.shape == (64, 4, 4) and codes.dtype == np.int32
    assert model.reconstruct(x).shape == x.shape
    usage = model.codebook_usage(x)
    assert usage["counts"].sum() == 64 * 16
    assert 0 < usage["usage"] <= 1 and 1 <= usage["perplexity"] <= 8
    # A one-point posterior: the bound is the ELBO for every k.
    np.testing.assert_allclose(model.log_prob(x, 50), model.elbo(x), rtol=1e-6)


# ----------------------------------------------------------------------
# Likelihoods and the KL term.


def test_discretized_likelihoods_are_normalized_and_exact():
    grid = np.linspace(-1, 1, 17).astype("float32")
    for mean in (-3.0, -1.0, 0.3, 1.0, 12.0):
        for log_scale in (-6.5, -2.0, 0.0, 3.0):
            log_p = np.asarray(likelihoods.discretized_gaussian_log_prob(
                grid, np.full(17, mean, "float32"), np.full(17, log_scale, "float32"), 17
            ))
            assert abs(np.exp(log_p).sum() - 1.0) < 1e-4
            scale, half = math.exp(log_scale), 1.0 / 16
            lo = np.r_[-np.inf, (grid[1:] - half - mean) / scale]
            hi = np.r_[(grid[:-1] + half - mean) / scale, np.inf]
            # float64 reference, from the tail on the far side of the mean
            # (the near side's log1p(-1) = -inf is computed, then unused).
            with np.errstate(divide="ignore"):
                upper = stats.norm.logsf(lo) + np.log1p(
                    -np.exp(stats.norm.logsf(hi) - stats.norm.logsf(lo))
                )
                lower = stats.norm.logcdf(hi) + np.log1p(
                    -np.exp(stats.norm.logcdf(lo) - stats.norm.logcdf(hi))
                )
            expected = np.where(grid >= mean, upper, lower)
            np.testing.assert_allclose(log_p, expected, rtol=1e-4, atol=1e-4)
    # The continuous Gaussian: a fixed scale, and a learned one (means
    # first, then the raw scales, on the last axis).
    rng = np.random.default_rng(0)
    x, mean = rng.normal(size=(2, 3, 4)).astype("float32")
    log_p = likelihoods.log_likelihood(x, mean, "gaussian", 0.5, None)
    np.testing.assert_allclose(log_p, stats.norm.logpdf(x, mean, 0.5).sum(1), rtol=1e-5)
    raw = np.full((3, 4), 2.0, "float32")
    params = np.concatenate([mean, raw], axis=-1)
    location, log_scale = likelihoods.split_parameters(params, "gaussian", "learned")
    np.testing.assert_allclose(ops.convert_to_numpy(location), mean)
    # A smooth floor at MIN_SCALE: log s = log m + softplus(raw - log m).
    log_min = math.log(likelihoods.MIN_SCALE)
    np.testing.assert_allclose(
        ops.convert_to_numpy(log_scale), log_min + np.log1p(np.exp(2.0 - log_min)), rtol=1e-5
    )
    assert VAE((4,), 2, scale=0.5, hidden_units=(8,)).decoder.output_shape == (None, 4)
    assert VAE((4,), 2, hidden_units=(8,)).decoder.output_shape == (None, 8)
    logits = np.full(17, 0.4, "float32")
    log_p = np.asarray(likelihoods.binomial_log_prob(grid, logits, 17))
    expected = stats.binom.logpmf(np.arange(17), 16, 1 / (1 + math.exp(-0.4)))
    np.testing.assert_allclose(log_p, expected, atol=1e-4)


def test_kl_closed_form_and_monte_carlo(digit_data):
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 4)).astype("float32")
    log_var = rng.normal(scale=0.7, size=(3, 4)).astype("float32")
    kl = np.asarray(VAE.kl_divergence(mean, log_var))
    var = np.exp(log_var)
    closed = 0.5 * np.sum(mean**2 + var - 1 - log_var, axis=1)
    np.testing.assert_allclose(kl, closed, rtol=1e-5)
    # Monte Carlo: E_q[log q(z) - log p(z)].
    eps = rng.normal(size=(200_000, 3, 4))
    z = mean + np.sqrt(var) * eps
    log_q = -0.5 * np.sum(eps**2 + log_var + np.log(2 * np.pi), axis=-1)
    log_p = -0.5 * np.sum(z**2 + np.log(2 * np.pi), axis=-1)
    np.testing.assert_allclose((log_q - log_p).mean(axis=0), kl, rtol=0.02, atol=0.02)

    # The model's logged KL is that closed form of its own posterior.
    x = digit_data[0][:32]
    model = VAE((8, 8, 1), 2, num_levels=17, seed=5, **TINY)
    model.compile()
    logs = model.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    m, lv = model.encode(x)
    np.testing.assert_allclose(
        logs["kl_loss"], np.asarray(VAE.kl_divergence(m, lv)).mean(), rtol=1e-4
    )


# ----------------------------------------------------------------------
# The importance-weighted bound on a trained model.


@pytest.fixture(scope="module")
def trained_vae():
    images, _ = digits("train")
    model = VAE((64,), 4, likelihood="bernoulli", num_levels=17, hidden_units=(64,), seed=6)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(images[:512].reshape(-1, 64), batch_size=128, epochs=10, verbose=0)
    return model, digits("test")[0][:128].reshape(-1, 64)


def test_importance_weighted_bound_grows_with_k(trained_vae):
    model, x = trained_vae
    elbo = model.elbo(x, num_samples=20, seed=0).mean()
    k1 = model.log_prob(x, 1, seed=1).mean()
    k10 = model.log_prob(x, 10, seed=2).mean()
    k100 = model.log_prob(x, 100, seed=3, chunk_size=1000).mean()  # chunked
    # k = 1 is an unbiased estimate of the ELBO (its KL by Monte Carlo).
    assert abs(k1 - elbo) < 1.5, (k1, elbo)
    assert k10 > elbo + 0.1, (k10, elbo)
    assert k100 > k10, (k100, k10)
    # Seeded, hence repeatable; chunking changes memory, not the bound.
    np.testing.assert_array_equal(model.log_prob(x[:8], 5, seed=7),
                                  model.log_prob(x[:8], 5, seed=7))
    chunked = model.log_prob(x[:16], 200, seed=8, chunk_size=64).mean()
    whole = model.log_prob(x[:16], 200, seed=9, chunk_size=10_000).mean()
    assert abs(chunked - whole) < 1.0, (chunked, whole)
    with pytest.raises(ValueError, match="num_importance_samples"):
        model.log_prob(x, 0)
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(x.reshape(-1, 8, 8, 1))


# ----------------------------------------------------------------------
# VQ-VAE.


def test_straight_through_gives_the_encoder_gradients(digit_data):
    # No commitment term, no EMA, no restarts: the only path from the loss
    # to the encoder is the straight-through estimator.
    x = digit_data[0].reshape(-1, 64)[:16]
    model = VQVAE((64,), 8, 3, num_latents=2, commitment_cost=0.0,
                  dead_code_threshold=0.0, hidden_units=(16,), seed=7)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    before = [v.numpy().copy() for v in model.encoder.trainable_weights]
    model.train_on_batch(x)
    moved = [np.abs(v.numpy() - b).max() for v, b in zip(model.encoder.trainable_weights, before)]
    assert max(moved) > 0, moved

    def reconstruction_loss(v):
        params = model.decoder(model.quantizer(model.encoder(v)))
        return -likelihoods.log_likelihood(v, params, "gaussian", "learned", None)

    grad = ops.convert_to_numpy(model.gradient(reconstruction_loss, ops.convert_to_tensor(x)))
    assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_codebook_usage_on_a_hand_made_example():
    vq = VectorQuantizer(num_codes=4, code_dim=2, dead_code_threshold=0.0)
    codebook = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], "float32")
    vq.codebook.assign(codebook)
    z = np.array([[[0.1, 0.0], [-0.2, 0.1]], [[0.0, 0.2], [0.1, 0.9]]], "float32")
    indices, codes = vq.quantize_vectors(z)
    np.testing.assert_array_equal(ops.convert_to_numpy(indices), [[0, 0], [0, 2]])
    np.testing.assert_allclose(ops.convert_to_numpy(codes), codebook[[[0, 0], [0, 2]]])
    counts, usage, perplexity = vq.code_statistics(indices)
    np.testing.assert_array_equal(ops.convert_to_numpy(counts), [3, 0, 1, 0])
    assert float(usage) == 0.5
    expected = math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert abs(float(perplexity) - expected) < 1e-5

    # EMA: sizes and sums move halfway; unused codes stay where they are.
    ema = VectorQuantizer(num_codes=4, code_dim=2, ema_decay=0.5, dead_code_threshold=0.0)
    ema.codebook.assign(codebook)
    ema.ema_code_sum.assign(codebook)
    ema.update(z, indices, seed=0)
    code0 = (0.5 * codebook[0] + 0.5 * z.reshape(-1, 2)[:3].sum(0)) / (0.5 + 0.5 * 3)
    code2 = (0.5 * codebook[2] + 0.5 * z[1, 1]) / (0.5 + 0.5)
    np.testing.assert_allclose(ema.codebook.numpy(), [code0, codebook[1], code2, codebook[3]],
                               rtol=1e-6)
    np.testing.assert_allclose(ema.code_usage.numpy(), 0.01 * np.array([3, 0, 1, 0]), rtol=1e-6)

    # Dead-code restart: only the code below the threshold moves, onto a
    # vector of the batch.
    restart = VectorQuantizer(num_codes=4, code_dim=2, dead_code_threshold=1.0)
    restart.codebook.assign(codebook)
    restart.code_usage.assign(np.array([5, 5, 5, 0], "float32"))
    restart.update(z, indices, seed=keras.random.SeedGenerator(0))
    new = restart.codebook.numpy()
    np.testing.assert_array_equal(new[:3], codebook[:3])
    assert any(np.allclose(new[3], v) for v in z.reshape(-1, 2)), new[3]


# ----------------------------------------------------------------------
# Validation.


def test_arguments_are_validated():
    bad = [
        (lambda: VAE((8, 8), 2), "data_shape"),
        (lambda: VAE((8, 8, 1), 0), "latent_dim"),
        (lambda: VAE((4,), 2, likelihood="poisson"), "likelihood"),
        (lambda: VAE((4,), 2, scale=-1.0), "scale"),
        (lambda: VAE((4,), 2, num_levels=1), "num_levels"),
        (lambda: VAE((4,), 2, beta=-1.0), "beta"),
        (lambda: VAE((4,), 2, kl_warmup_steps=-1), "kl_warmup_steps"),
        (lambda: VAE((4,), 2, encoder=_mlp(4, 3, "e")), "encoder"),
        (lambda: VAE((4,), 2, decoder=_mlp(2, 3, "d")), "decoder"),
        (lambda: ConditionalVAE((4,), 1), "num_classes"),
        (lambda: VQVAE((4,), 1), "num_codes"),
        (lambda: VQVAE((4,), 8, 0), "code_dim"),
        (lambda: VQVAE((4,), 8, 2, ema_decay=1.5), "ema_decay"),
        (lambda: VQVAE((4,), 8, 2, dead_code_threshold=-1), "dead_code_threshold"),
        (lambda: VQVAE((4,), 8, 2, commitment_cost=-0.1), "commitment_cost"),
        (lambda: VQVAE((8, 8, 1), 8, 2, num_latents=3), "num_latents"),
    ]
    for make, name in bad:
        with pytest.raises(ValueError, match=name):
            make()
    model = VAE((4,), 2, hidden_units=(8,), seed=0)
    with pytest.raises(ValueError, match="mode"):
        model.sample(2, mode="median")
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(0)
    with pytest.raises(ValueError, match="seed"):
        model.sample(2, seed=1.5)
