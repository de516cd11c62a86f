"""zoo.diffusion: the forward process, every sampler against an exact
denoiser, guidance, EMA and the shared model checks."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.helpers import check_model, counted_calls
from zoo.diffusion import DDPM, alphas_cumprod

BACKEND = keras.backend.backend()

MEAN = np.array([1.0, -2.0], "float32")
STD = np.array([0.5, 1.5], "float32")


@keras.saving.register_keras_serializable(package="zoo_tests")
class OptimalGaussianDenoiser(keras.layers.Layer):
    """The exact denoiser of N(MEAN, diag(STD^2)) data, in any parameterization."""

    def __init__(self, schedule, timesteps, prediction, **kwargs):
        super().__init__(**kwargs)
        self.schedule, self.timesteps, self.prediction = schedule, timesteps, prediction
        self.abar = alphas_cumprod(schedule, timesteps).astype("float32")

    def call(self, inputs):
        x, t = inputs
        mean, std = ops.convert_to_tensor(MEAN), ops.convert_to_tensor(STD)
        abar = ops.reshape(ops.take(ops.convert_to_tensor(self.abar), t), (-1, 1))
        a, s = ops.sqrt(abar), ops.sqrt(1.0 - abar)
        var = a**2 * std**2 + s**2
        eps = s * (x - a * mean) / var                       # E[eps | x_t]
        x0 = mean + a * std**2 * (x - a * mean) / var        # E[x0 | x_t]
        return {"epsilon": eps, "x0": x0, "v": a * eps - s * x0}[self.prediction]

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]

    def get_config(self):
        return {**super().get_config(), "schedule": self.schedule,
                "timesteps": self.timesteps, "prediction": self.prediction}


def exact_model(prediction="v", schedule="cosine", timesteps=1000):
    x, t = keras.Input((2,)), keras.Input((), dtype="int32")
    out = OptimalGaussianDenoiser(schedule, timesteps, prediction)([x, t])
    return DDPM((2,), schedule=schedule, timesteps=timesteps, prediction=prediction,
                denoiser=keras.Model([x, t], out), ema_decay=None)


@pytest.mark.parametrize(
    "sampler, steps, prediction, tolerance",
    [
        ("ddpm", 1000, "v", 0.04),
        ("ddim", 50, "v", 0.06),
        ("ddim", 50, "epsilon", 0.06),
        ("dpm++2m", 20, "v", 0.06),
        ("dpm++2m", 20, "x0", 0.06),
    ],
)
def test_samplers_reproduce_a_gaussian_with_its_exact_denoiser(sampler, steps, prediction, tolerance):
    samples = exact_model(prediction).sample(8000, steps=steps, sampler=sampler, seed=0,
                                             verbose=False)
    np.testing.assert_allclose(samples.mean(0), MEAN, atol=0.05)
    np.testing.assert_allclose(samples.std(0), STD, rtol=tolerance)


def test_ddim_with_eta_one_is_the_ddpm_sampler():
    model = exact_model()
    a = model.sample(64, steps=30, sampler="ddpm", seed=5, verbose=False)
    b = model.sample(64, steps=30, sampler="ddim", eta=1.0, seed=5, verbose=False)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_forward_process_has_the_closed_form_mean_and_variance(schedule):
    model = DDPM((2,), schedule=schedule, timesteps=100, hidden_units=8, num_blocks=1)
    if schedule == "linear":
        betas = np.linspace(1e-3, 0.2, 100)  # 1e-4..0.02 rescaled to T=100
        np.testing.assert_allclose(model.alphas_cumprod, np.cumprod(1 - betas), rtol=1e-10)
    x0 = np.tile(np.array([[1.5, -0.5]], "float32"), (20000, 1))
    t = np.full((20000,), 40, "int32")
    noise = keras.random.normal((20000, 2), seed=0)
    x_t = ops.convert_to_numpy(model.q_sample(x0, t, noise))
    mean, var = (ops.convert_to_numpy(v) for v in model.q_mean_variance(x0, t))
    abar = model.alphas_cumprod[40]
    np.testing.assert_allclose(mean[0], np.sqrt(abar) * x0[0], rtol=1e-6)
    np.testing.assert_allclose(var[0], 1 - abar, rtol=1e-6)
    np.testing.assert_allclose(x_t.mean(0), mean[0], atol=0.02)
    np.testing.assert_allclose(x_t.var(0), var[0], rtol=0.05)


def tiny(data_shape, **kwargs):
    defaults = dict(timesteps=50, hidden_units=16, num_blocks=1, channels=8,
                    channel_multipliers=(1,), seed=0)
    return DDPM(data_shape, **{**defaults, **kwargs})


def test_vector_ddpm_passes_the_shared_checks(tmp_path):
    data = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    check_model(lambda: tiny((2,), min_snr_gamma=5.0), data, tmp_path, sample_shape=(2,),
                sample_kwargs={"steps": 5, "sampler": "ddpm"})


def test_conditional_image_ddpm_passes_the_shared_checks(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=32).astype("int32")
    check_model(lambda: tiny((8, 8, 1), num_classes=3, prediction="epsilon"), (x, y), tmp_path,
                sample_shape=(8, 8, 1),
                sample_kwargs={"steps": 4, "sampler": "dpm++2m", "labels": 1, "guidance_scale": 2.0})


def test_calling_the_model_returns_the_denoiser_prediction():
    model = tiny((8, 8, 1), num_classes=3)
    x = np.zeros((2, 8, 8, 1), "float32")
    out = model([x, np.array([0, 49], "int32"), np.array([0, 3], "int32")])
    assert tuple(out.shape) == (2, 8, 8, 1)


def test_guidance_scale_one_is_plain_conditional_sampling():
    model = tiny((2,), num_classes=4, ema_decay=None)
    # Untrained, the zero-initialised output layer would ignore the labels.
    rng = np.random.default_rng(0)
    for v in model.denoiser.trainable_variables:
        v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
    labels = np.array([0, 1, 2, 3] * 4, "int32")
    guided = model.sample(16, steps=6, labels=labels, guidance_scale=1.0, seed=2)
    plain = model.sample(16, steps=6, labels=labels, seed=2)
    np.testing.assert_allclose(guided, plain, rtol=1e-5, atol=1e-5)
    assert not np.allclose(plain, model.sample(16, steps=6, labels=labels, guidance_scale=3.0,
                                              seed=2))


def test_compiled_sampling_follows_the_weights_and_matches_uncompiled_sampling():
    # jit_compile=True: the whole loop by XLA / jax.jit, and on PyTorch each
    # step by TorchInductor; False: no compilation. One compiled step serves
    # every sampler and step count (the coefficient tables are padded).
    model = tiny((2,), num_classes=3, ema_decay=None)
    rng = np.random.default_rng(1)

    def randomize():
        for v in model.denoiser.trainable_variables:
            v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))

    labels = np.array([0, 1, 2, 0, 1, 2], "int32")
    for sampler, steps in [("ddim", 7), ("dpm++2m", 12)]:
        randomize()  # a compiled step reads the weights as they are now
        kwargs = dict(steps=steps, sampler=sampler, labels=labels, guidance_scale=2.0, seed=3)
        compiled = model.sample(6, jit_compile=True, **kwargs)
        np.testing.assert_allclose(
            compiled, model.sample(6, jit_compile=False, **kwargs), rtol=1e-4, atol=1e-4
        )
        np.testing.assert_allclose(
            compiled, model.sample(6, **kwargs), rtol=1e-4, atol=1e-4
        )
    # Stochastic steps: fresh noise at every step, reproducible by seed.
    a = model.sample(6, steps=9, sampler="ddpm", labels=labels, seed=4, jit_compile=True)
    b = model.sample(6, steps=9, sampler="ddpm", labels=labels, seed=4, jit_compile=True)
    c = model.sample(6, steps=9, sampler="ddpm", labels=labels, seed=5, jit_compile=True)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    with pytest.raises(ValueError, match=r"`jit_compile` must be \"auto\", True or False"):
        model.sample(6, labels=labels, jit_compile="yes")


def test_auto_sampling_traces_the_step_once_a_setting_has_run_long(monkeypatch):
    # "auto" on PyTorch: a first short run steps eagerly (a Keras call of the
    # denoiser per step); once runs of a setting have taken more than
    # LONG_LOOP steps, the step is traced once, and later runs make no Keras
    # call at all and return exactly what eager sampling returns, after the
    # weights change too. On JAX and TensorFlow the whole loop compiles at
    # its first run.
    import zoo.core

    monkeypatch.setattr(zoo.core, "LONG_LOOP", 12)
    model = tiny((2,), num_classes=3, ema_decay=None)
    rng = np.random.default_rng(2)

    def randomize():
        for v in model.denoiser.trainable_variables:
            v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))

    randomize()
    calls = counted_calls(monkeypatch, model.denoiser)
    labels = np.array([0, 1, 2, 0, 1, 2], "int32")
    kwargs = dict(steps=8, sampler="ddpm", labels=labels, guidance_scale=2.0, seed=3)
    runs = []
    for _ in range(3):
        calls.clear()
        runs.append((model.sample(6, **kwargs), len(calls)))
    assert runs[2][1] == 0
    if BACKEND == "torch":
        assert [n for _, n in runs] == [8, 1, 0]  # eager, traced, the trace reused
    eager = model.sample(6, jit_compile=False, **kwargs)
    exact = dict(rtol=1e-6, atol=1e-6) if BACKEND == "torch" else dict(rtol=1e-4, atol=1e-4)
    for samples, _ in runs:
        np.testing.assert_allclose(samples, eager, **exact)
    randomize()
    calls.clear()
    traced = model.sample(6, **kwargs)
    assert not calls
    np.testing.assert_allclose(traced, model.sample(6, jit_compile=False, **kwargs), **exact)
    assert not np.allclose(traced, eager)


def test_ema_tracks_training_and_is_swapped_in_only_inside_the_block():
    model = tiny((2,), ema_decay=0.9)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    model.fit(np.random.default_rng(0).normal(size=(64, 2)).astype("float32"),
              batch_size=16, epochs=2, verbose=0)
    weights = [v.numpy().copy() for v in model.denoiser.trainable_variables]
    averages = [v.numpy() for v in model.ema]
    assert any(not np.allclose(w, a) for w, a in zip(weights, averages))
    with model.ema_weights():
        for v, a in zip(model.denoiser.trainable_variables, averages):
            np.testing.assert_array_equal(v.numpy(), a)
    for v, w in zip(model.denoiser.trainable_variables, weights):
        np.testing.assert_array_equal(v.numpy(), w)


def test_bad_sampling_arguments_are_clear_errors():
    model = tiny((2,))
    with pytest.raises(ValueError, match=r"`steps` must be between 1 and the training horizon of 50"):
        model.sample(4, steps=51)
    with pytest.raises(ValueError, match=r"`sampler` must be one of"):
        model.sample(4, sampler="euler")
    with pytest.raises(ValueError, match=r"unconditional"):
        model.sample(4, labels=[0, 1, 2, 3])
    with pytest.raises(ValueError, match=r"`guidance_scale` needs a class-conditional model"):
        model.sample(4, guidance_scale=2.0)
    conditional = tiny((2,), num_classes=3)
    with pytest.raises(ValueError, match=r"`guidance_scale` needs `labels`"):
        conditional.sample(4, guidance_scale=2.0)
    with pytest.raises(ValueError, match=r"`labels` must be in \[0, 2\]"):
        conditional.sample(4, labels=[0, 1, 2, 3])


def test_constructor_and_training_errors():
    with pytest.raises(ValueError, match=r"`prediction` must be one of"):
        DDPM((2,), prediction="score")
    with pytest.raises(ValueError, match=r"`schedule` must be one of"):
        DDPM((2,), schedule="sigmoid")
    with pytest.raises(ValueError, match=r"divisible by 2"):
        DDPM((7, 7, 1), channels=8)
    model = tiny((2,), num_classes=3)
    model.compile()
    with pytest.raises(ValueError, match=r"fit\(x, labels\)"):
        model.fit(np.zeros((8, 2), "float32"), batch_size=8, verbose=0)


def test_trajectory_runs_from_noise_to_data():
    model = exact_model()
    samples, trajectory = model.sample(256, steps=20, sampler="ddim", seed=0,
                                       return_trajectory=True)
    assert trajectory.shape[1:] == (256, 2) and len(trajectory) >= 3
    np.testing.assert_array_equal(trajectory[-1], samples)
    # Noise first (unit variance), the data's spread last.
    np.testing.assert_allclose(trajectory[0].std(0), [1.0, 1.0], rtol=0.15)
    np.testing.assert_allclose(trajectory[-1].std(0), STD, rtol=0.15)
