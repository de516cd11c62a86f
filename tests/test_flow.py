"""The flow family: exact likelihoods, invertibility and log-determinants.

Runs under every backend. Tiny configurations keep it fast; the Jacobian
check uses the core's `GenerativeModel.gradient`, i.e. each backend's own
autodiff.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from tests.helpers import check_model
from zoo.core import GenerativeModel
from zoo.data import TwoMoons, digits
from zoo.flow import (
    ActNorm,
    AffineCoupling,
    Chain,
    FactorOut,
    FlowModel,
    Glow,
    Invert,
    InvertibleConv1x1,
    Logit,
    NeuralSplineFlow,
    RationalQuadraticCoupling,
    RealNVP,
    Squeeze,
)

# ----------------------------------------------------------------------------
# Tiny models and data.


def tiny_realnvp_vectors():
    return RealNVP((2,), num_couplings=2, hidden_units=(8,), seed=0)


def tiny_nsf():
    return NeuralSplineFlow((2,), num_couplings=2, num_bins=4, hidden_units=(8,), seed=0)


def tiny_realnvp_images():
    return RealNVP((8, 8, 1), num_levels=17, num_scales=2, couplings_per_scale=1,
                   filters=4, seed=0)


def tiny_glow():
    return Glow((8, 8, 1), num_levels=17, num_scales=2, steps_per_scale=1,
                filters=4, seed=0)


def tiny_custom():
    return FlowModel(
        Chain([ActNorm((2,)), InvertibleConv1x1((2,), seed=0),
               AffineCoupling((2,), mask="channel", hidden_units=(8,), seed=1)]),
        seed=0,
    )


def moons(n, seed=0):
    return TwoMoons().sample(n, seed=seed)


def images(n=64):
    return digits("train")[0][:n]


def dequantized(x, seed=0):
    rng = np.random.default_rng(seed)
    return (x + (rng.random(x.shape) - 0.5) / 8.0).astype("float32")


def perturb(layer, scale=0.2, seed=0):
    """Moves every trainable weight off its (often identity) initial value."""
    rng = np.random.default_rng(seed)
    for v in layer.trainable_variables:
        v.assign(v.numpy() + rng.normal(0.0, scale, v.shape).astype("float32"))


MODELS = {
    "realnvp_vectors": (tiny_realnvp_vectors, lambda: moons(64), (2,)),
    "neural_spline_flow": (tiny_nsf, lambda: moons(64), (2,)),
    "realnvp_images": (tiny_realnvp_images, images, (8, 8, 1)),
    "glow": (tiny_glow, images, (8, 8, 1)),
    "custom_chain": (tiny_custom, lambda: moons(64), (2,)),
}


# ----------------------------------------------------------------------------
# The shared protocol, then exact inversion of the trained, perturbed model.


@pytest.mark.parametrize("name", list(MODELS))
def test_protocol_and_exact_inverse(name, tmp_path):
    make, data, shape = MODELS[name]
    x = data()
    model = check_model(make, x, tmp_path, sample_shape=shape, loss_should_fall=True)
    if len(shape) == 3:
        check_image_likelihood(model, x)
    perturb(model.flow, scale=0.05)
    if len(shape) == 3:
        x = dequantized(x)
    z, log_det = model.forward(x)
    assert z.shape == x.shape and log_det.shape == (len(x),)
    np.testing.assert_allclose(model.inverse(z), x, atol=1e-4)
    # log p(x) = log N(z) + log_det, the change of variables.
    log_normal = -0.5 * np.sum(z.reshape(len(x), -1) ** 2 + math.log(2 * math.pi), axis=1)
    np.testing.assert_allclose(model.log_prob(x), log_normal + log_det, rtol=1e-5, atol=1e-3)
    # sample(n, seed, temperature) is the inverse of temperature * N(0, I) draws.
    z = np.random.default_rng(5).standard_normal((4, *shape)).astype("float32")
    expected = model.inverse(0.5 * z)
    samples = model.sample(4, seed=5, temperature=0.5)
    if model.num_levels is not None:
        expected = np.clip(np.round((expected + 1.0) * 8.0) / 8.0 - 1.0, -1.0, 1.0)
        np.testing.assert_allclose((samples + 1.0) * 8.0, np.round((samples + 1.0) * 8.0),
                                   atol=1e-4, err_msg="samples lie on the data grid")
    np.testing.assert_allclose(samples, expected, atol=1e-5)


def check_image_likelihood(model, x):
    """Logs, `evaluate` and `bits_per_dim` agree on the dequantized NLL."""
    dims = 64 * math.log(2)
    history = model.history.history
    np.testing.assert_allclose(history["bits_per_dim"], np.divide(history["loss"], dims),
                               rtol=1e-5)
    result = model.evaluate(x, batch_size=len(x), verbose=0, return_dict=True)
    np.testing.assert_allclose(result["bits_per_dim"], result["loss"] / dims, rtol=1e-5)
    # The eager estimate: the same bound with other noise draws.
    eager = model.bits_per_dim(x, seed=0, num_samples=2).mean()
    assert abs(eager - result["bits_per_dim"]) < 0.05, (eager, result)
    # It is log_prob of the dequantized data plus the bins' volume, in bits.
    rng = np.random.default_rng(1)
    noisy = x + ((rng.random(x.shape, dtype=np.float32) - 0.5) * np.float32(1 / 8))
    manual = (-model.log_prob(noisy) + 64 * math.log(8.0)) / dims
    np.testing.assert_allclose(model.bits_per_dim(x, seed=1), manual, rtol=1e-5)


def test_only_image_flows_log_bits_per_dim():
    assert tiny_nsf().log_names() == ("loss",)
    assert tiny_realnvp_images().log_names() == ("loss", "bits_per_dim")


# ----------------------------------------------------------------------------
# log_det of every bijector against the autodiff Jacobian.


def _coupling_chain():
    return Chain([ActNorm((3,)), InvertibleConv1x1((3,), lu=True, seed=2),
                  AffineCoupling((3,), parity=1, hidden_units=(6,), seed=3)])


BIJECTORS = {
    "affine_alternating": lambda: AffineCoupling((3,), hidden_units=(6,), seed=0),
    "affine_channel_vector": lambda: AffineCoupling(
        (4,), mask="channel", parity=1, hidden_units=(6,), seed=0),
    "affine_checkerboard": lambda: AffineCoupling(
        (4, 4, 2), mask="checkerboard", parity=1, filters=4, seed=0),
    "affine_channel_image": lambda: AffineCoupling(
        (2, 2, 4), mask="channel", filters=4, seed=0),
    "actnorm_vector": lambda: ActNorm((3,)),
    "actnorm_image": lambda: ActNorm((2, 2, 3)),
    "conv1x1": lambda: InvertibleConv1x1((2, 2, 3), seed=0),
    "conv1x1_lu": lambda: InvertibleConv1x1((2, 2, 3), lu=True, seed=0),
    "squeeze": lambda: Squeeze((4, 4, 2)),
    "unsqueeze": lambda: Invert(Squeeze((4, 4, 1))),
    "logit": lambda: Logit((3,), low=-1.25, high=1.25, alpha=0.05),
    "rq_spline": lambda: RationalQuadraticCoupling(
        (3,), parity=1, num_bins=5, bound=2.0, hidden_units=(6,), seed=0),
    "chain": _coupling_chain,
    "factor_out": lambda: FactorOut(
        AffineCoupling((2, 2, 2), mask="checkerboard", filters=4, seed=0), channels=4),
    "inverted_coupling": lambda: Invert(AffineCoupling((3,), hidden_units=(6,), seed=0)),
}


def jacobian(holder, fn, x):
    """`(batch, dims, dims)` Jacobian of `fn` by one call of the core's gradient.

    Copy `i` of the batch feeds output coordinate `i` only, so the gradient
    of the sum with respect to copy `i` is row `i` of each example's Jacobian.
    """
    batch, shape = x.shape[0], tuple(x.shape[1:])
    dims = math.prod(shape)
    copies = ops.reshape(ops.broadcast_to(x[None], (dims, batch, *shape)), (-1, *shape))
    pick = ops.convert_to_tensor(np.eye(dims, dtype="float32")[:, None, :])

    def selected(v):
        out = ops.reshape(fn(v), (dims, batch, dims))
        return ops.reshape(ops.sum(out * pick, axis=-1), (-1,))

    grad = ops.reshape(holder.gradient(selected, copies), (dims, batch, dims))
    return ops.transpose(grad, (1, 0, 2))


@pytest.mark.parametrize("name", list(BIJECTORS))
def test_log_det_is_log_abs_det_of_the_jacobian(name):
    bijector = BIJECTORS[name]()
    perturb(bijector, scale=0.3, seed=1)
    rng = np.random.default_rng(0)
    shape = (3, *bijector.event_shape)
    if name == "logit":
        x = rng.uniform(-1.2, 1.2, shape)
    elif name == "rq_spline":
        x = rng.uniform(-2.5, 2.5, shape)  # some values in the identity tails
    else:
        x = rng.normal(size=shape)
    x = x.astype("float32")

    # Everything in one function compiled by the core (one XLA compilation
    # on JAX rather than one per operation and shape).
    holder = GenerativeModel()
    holder.bijector = bijector

    def run(x):
        z, log_det = bijector.forward(x)
        x_again, inverse_log_det = bijector.inverse_and_log_det(z)
        jac = jacobian(holder, lambda v: bijector.forward(v)[0], x)
        return z, log_det, x_again, inverse_log_det, bijector.inverse(z), jac

    outputs = holder.compile_function(run)(ops.convert_to_tensor(x), seed=0)
    z, log_det, x_again, inverse_log_det, x_inverse, jac = [
        np.asarray(ops.convert_to_numpy(t), np.float64) for t in outputs
    ]
    assert z.size == x.size, "bijectors keep the number of dimensions"
    sign, expected = np.linalg.slogdet(jac)
    assert np.all(sign != 0)
    np.testing.assert_allclose(log_det, expected, atol=2e-3, rtol=1e-4)
    # The inverse: exact, with the negated log-determinant.
    np.testing.assert_allclose(x_again, x, atol=1e-4)
    np.testing.assert_allclose(x_inverse, x, atol=1e-4)
    np.testing.assert_allclose(inverse_log_det, -log_det, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("name", list(BIJECTORS))
def test_bijector_config_round_trip(name):
    bijector = BIJECTORS[name]()
    config = keras.saving.serialize_keras_object(bijector)
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(bijector)
    assert clone.get_config() == bijector.get_config()
    assert [v.shape for v in clone.weights] == [v.shape for v in bijector.weights]


# ----------------------------------------------------------------------------
# Normalization: exp(log_prob) integrates to 1.


def grid_mass(model, low, high, num=256):
    """Midpoint-rule integral of exp(log_prob) over the square [low, high]^2."""
    step = (high - low) / num
    axis = (low + step * (np.arange(num) + 0.5)).astype(np.float32)
    gx, gy = np.meshgrid(axis, axis, indexing="ij")
    points = np.stack([gx.ravel(), gy.ravel()], axis=1)
    density = np.exp(model.log_prob(points, batch_size=len(points)).astype(np.float64))
    return density.sum() * step * step


def gaussian_nll(x):
    """NLL in nats of the best Gaussian fit to `x`: a bar any trained flow clears."""
    return 0.5 * np.linalg.slogdet(2 * np.pi * np.e * np.cov(x.T))[1]


@pytest.mark.parametrize("make", [tiny_nsf, tiny_realnvp_vectors], ids=["nsf", "realnvp"])
def test_untrained_perturbed_flow_integrates_to_one(make):
    model = make()
    perturb(model.flow, scale=0.1)
    np.testing.assert_allclose(grid_mass(model, -7.0, 7.0), 1.0, atol=0.02)


def test_briefly_trained_flow_on_moons_integrates_to_one():
    model = RealNVP((2,), num_couplings=4, hidden_units=(32, 32), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(5e-3))
    model.fit(moons(4096), batch_size=256, epochs=5, verbose=0)
    test = moons(2048, seed=1)
    nll = -model.log_prob(test).mean()
    assert nll < gaussian_nll(test) - 0.2, f"too little training to test anything: {nll}"
    np.testing.assert_allclose(grid_mass(model, -3.5, 4.5), 1.0, atol=0.02)


@pytest.mark.slow
def test_trained_spline_flow_on_moons_integrates_to_one():
    model = NeuralSplineFlow((2,), num_couplings=4, num_bins=8, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(moons(16384), batch_size=256, epochs=20, verbose=0)
    nll = -model.log_prob(moons(4096, seed=1)).mean()
    assert nll < TwoMoons().entropy() + 0.15, nll
    np.testing.assert_allclose(grid_mass(model, -3.5, 4.5, num=800), 1.0, atol=0.02)


# ----------------------------------------------------------------------------
# ActNorm's data-dependent initialization.


def test_actnorm_initializes_to_zero_mean_unit_variance_per_channel():
    rng = np.random.default_rng(0)
    x = (rng.normal(size=(32, 4, 4, 3)) * [0.5, 2.0, 3.0] + [1.0, -2.0, 5.0]).astype("float32")
    layer = ActNorm((4, 4, 3))
    z, _ = layer.forward(x, training=True)  # the first step already normalizes
    z = ops.convert_to_numpy(z)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.var(axis=(0, 1, 2)), 1.0, atol=1e-3)
    assert int(layer.initialized.numpy()) == 0
    layer.finish_initialization()
    assert int(layer.initialized.numpy()) == 1
    z, log_det = layer.forward(x)
    z = ops.convert_to_numpy(z)
    np.testing.assert_allclose(z.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.var(axis=(0, 1, 2)), 1.0, atol=1e-3)
    np.testing.assert_allclose(
        ops.convert_to_numpy(log_det), -16 * np.log(x.std(axis=(0, 1, 2))).sum(), rtol=1e-4
    )
    # Later batches no longer move it.
    loc = layer.loc.numpy().copy()
    layer.forward(x + 10.0, training=True)
    layer.finish_initialization()
    np.testing.assert_array_equal(layer.loc.numpy(), loc)


def test_actnorm_initializes_inside_the_compiled_training_step():
    x = moons(64) * np.array([3.0, 0.5], "float32") + np.array([5.0, -2.0], "float32")
    model = tiny_realnvp_vectors()
    actnorm = model.flow.bijectors[0]
    assert isinstance(actnorm, ActNorm)
    # No learning: what changes is the initialization alone.
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    history = model.fit(x, batch_size=64, epochs=1, verbose=0, shuffle=False)
    assert int(actnorm.initialized.numpy()) == 1
    z = ops.convert_to_numpy(actnorm.forward(x)[0])
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.var(axis=0), 1.0, atol=1e-3)
    # The step's loss was already that of the initialized flow.
    np.testing.assert_allclose(history.history["loss"][0],
                               -model.log_prob(x).mean(), rtol=1e-5)


# ----------------------------------------------------------------------------
# Singular 1x1 convolutions are detected, not turned into NaN.


@pytest.mark.parametrize(
    "kernel, message",
    [
        (np.array([[1, 2, 0], [2, 4, 0], [0, 0, 1]], "float32"), "singular"),
        (np.diag([1.0, 1.0, 1e-6]).astype("float32"), "ill-conditioned"),
        (np.full((3, 3), np.nan, "float32"), "non-finite"),
    ],
    ids=["singular", "ill_conditioned", "nan"],
)
def test_singular_conv1x1_is_detected(kernel, message):
    layer = InvertibleConv1x1((2, 2, 3), seed=0)
    layer.check_invertible()
    layer.kernel.assign(kernel)
    with pytest.raises(np.linalg.LinAlgError, match=message):
        layer.check_invertible()
    assert issubclass(np.linalg.LinAlgError, ValueError)


@pytest.mark.parametrize("lu", [False, True], ids=["free", "lu"])
def test_model_with_a_singular_conv1x1_refuses_to_run(lu):
    model = Glow((8, 8, 1), num_levels=17, num_scales=1, steps_per_scale=1,
                 filters=4, lu=lu, seed=0)
    conv = model.flow.bijectors[1].bijectors[2]
    assert isinstance(conv, InvertibleConv1x1)
    if lu:
        conv.log_s.assign(np.array([0.0, 0.0, 0.0, -30.0], "float32"))
    else:
        conv.kernel.assign(np.diag([1.0, 1.0, 1.0, 0.0]).astype("float32"))
    x = images(8)
    model.compile()
    for call in (
        lambda: model.log_prob(x),
        lambda: model.sample(2, seed=0),
        lambda: model.inverse(np.zeros((2, 8, 8, 1), "float32")),
        lambda: model.bits_per_dim(x),
        lambda: model.fit(x, verbose=0),
        lambda: model.evaluate(x, verbose=0),
    ):
        with pytest.raises(np.linalg.LinAlgError, match="singular|ill-conditioned"):
            call()


# ----------------------------------------------------------------------------
# Arguments are checked with errors that say what was expected.


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: RealNVP((6, 6, 1), num_scales=3), "divisible by 4"),
        (lambda: Glow((8, 8, 1), num_scales=4), "divisible by 16"),
        (lambda: Squeeze((5, 4, 1)), "divisible by 2"),
        (lambda: NeuralSplineFlow((8, 8, 1)), "data_shape"),
        (lambda: RealNVP((1,)), "at least 2 features"),
        (lambda: RealNVP((2,), num_levels=1), "num_levels"),
        (lambda: RealNVP((4, 4, 1), logit_alpha=0.5), "logit_alpha"),
        (lambda: Glow((8, 8, 1), lu="yes"), "lu"),
        (lambda: AffineCoupling((4,), mask="checkerboard"), "checkerboard"),
        (lambda: AffineCoupling((4,), mask="diagonal"), "mask"),
        (lambda: AffineCoupling((4,), parity=2), "parity"),
        (lambda: RationalQuadraticCoupling((2,), num_bins=1), "num_bins"),
        (lambda: Chain([Squeeze((4, 4, 1)), ActNorm((4, 4, 1))]), "expects"),
        (lambda: Chain([]), "at least one"),
        (lambda: FactorOut(Squeeze((4, 4, 1)), channels=4), "keep the shape"),
        (lambda: FlowModel(keras.layers.Dense(2)), "Bijector"),
    ],
)
def test_bad_arguments_are_clear_errors(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_bad_call_arguments_are_clear_errors():
    model = tiny_realnvp_vectors()
    with pytest.raises(ValueError, match="temperature"):
        model.sample(4, temperature=0.0)
    with pytest.raises(ValueError, match="num_samples"):
        model.sample(0)
    with pytest.raises(ValueError, match="seed"):
        model.sample(4, seed=1.5)
    with pytest.raises(ValueError, match=r"shape \(batch, 2\)"):
        model.log_prob(np.zeros((4, 3), "float32"))
    model.compile()
    with pytest.raises(ValueError, match="expects data of shape"):
        model.fit(np.zeros((4, 3), "float32"), verbose=0)
    with pytest.raises(ValueError, match="grid"):
        tiny_glow().bits_per_dim(images(4) + 0.01)
