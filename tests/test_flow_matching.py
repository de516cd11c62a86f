"""zoo.diffusion.FlowMatching: samplers against the exact velocity of a
Gaussian and against diffusers, likelihoods by the ODE (also DDPM's), the
DiT denoiser, bad input, mixed precision and the shared model checks."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.helpers import check_model
from zoo.diffusion import DDPM, FlowMatching
from zoo.diffusion.flow_samplers import flow_times, resolution_shift
from zoo.layers.dit import DiT

MEAN = np.array([1.0, -2.0], "float32")
STD = np.array([0.5, 1.5], "float32")


def gaussian_log_prob(x, mean, var):
    return np.sum(-0.5 * (x - mean) ** 2 / var - 0.5 * np.log(2 * np.pi * var), axis=1)


@keras.saving.register_keras_serializable(package="zoo_tests")
class GaussianVelocity(keras.layers.Layer):
    """The exact rectified-flow velocity of N(MEAN, diag(STD^2)) data; takes
    `[x, 1000 t]` as the zoo's denoisers do."""

    def call(self, inputs):
        x, t = inputs
        t = ops.reshape(t, (-1, 1)) / 1000.0
        mean, std = ops.convert_to_tensor(MEAN), ops.convert_to_tensor(STD)
        m = (1.0 - t) * mean
        var = (1.0 - t) ** 2 * std**2 + t**2
        r = (x - m) / var
        return t * r - mean - (1.0 - t) * std**2 * r  # E[noise - x0 | x_t]

    def compute_output_shape(self, input_shapes):
        return input_shapes[0]


def exact_flow(**kwargs):
    x, t = keras.Input((2,)), keras.Input(())
    return FlowMatching((2,), denoiser=keras.Model([x, t], GaussianVelocity()([x, t])),
                        ema_decay=None, **kwargs)


def test_euler_trajectory_equals_diffusers_flow_match_euler_scheduler():
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    velocity = GaussianVelocity()

    def diffusers_trajectory(scheduler, x):
        x, states = torch.from_numpy(x), [x]
        for t in scheduler.timesteps:
            v = ops.convert_to_numpy(velocity([x.numpy(), np.full(len(x), t.item(), "float32")]))
            x = scheduler.step(torch.from_numpy(np.asarray(v, "float32")), t, x).prev_sample
            states.append(x.numpy())
        return np.stack(states)

    model = exact_flow(shift=3.0)
    # diffusers' own grid, given to the zoo as explicit times.
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(10)
    samples, ours = model.sample(64, times=scheduler.sigmas.numpy(), sampler="euler", seed=0,
                                 return_trajectory=True)
    assert ours.shape == (11, 64, 2)
    np.testing.assert_allclose(ours, diffusers_trajectory(scheduler, ours[0]),
                               rtol=1e-5, atol=1e-5)
    # The zoo's grid (linspace(1, 0, 11), shifted): diffusers shifts the same.
    scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 0.0, 11)[:-1])
    np.testing.assert_allclose(scheduler.sigmas.numpy(), flow_times(10, 3.0), atol=1e-7)
    _, ours = model.sample(64, steps=10, sampler="euler", seed=1, return_trajectory=True)
    np.testing.assert_allclose(ours, diffusers_trajectory(scheduler, ours[0]),
                               rtol=1e-5, atol=1e-5)


def test_samplers_converge_at_their_order_to_the_exact_flow():
    # With the exact velocity the ODE carries noise n to MEAN + STD n.
    model = exact_flow()
    errors = {}
    for sampler in ("euler", "heun", "midpoint"):
        for steps in (8, 16):
            samples, trajectory = model.sample(256, steps=steps, sampler=sampler, seed=0,
                                               return_trajectory=True)
            exact = MEAN + STD * trajectory[0]
            errors[sampler, steps] = np.abs(samples - exact).max()
    assert 1.7 < errors["euler", 8] / errors["euler", 16] < 2.3           # first order
    # Second order (midpoint does better still on this linear ODE: ~8).
    assert 3.5 < errors["heun", 8] / errors["heun", 16] < 6.0
    assert errors["midpoint", 8] / errors["midpoint", 16] > 3.5
    for sampler in ("heun", "midpoint"):
        assert errors[sampler, 16] < 0.02 * errors["euler", 16]


@pytest.mark.parametrize("divergence", ["exact", "hutchinson"])
def test_log_prob_by_the_ode_matches_the_exact_gaussian_density(divergence):
    x = np.random.default_rng(0).normal(MEAN, STD, size=(64, 2)).astype("float32")
    truth = gaussian_log_prob(x, MEAN, STD**2)
    log_p = exact_flow().log_prob(x, steps=16, divergence=divergence, num_probes=16, seed=0)
    if divergence == "exact":
        np.testing.assert_allclose(log_p, truth, atol=0.02)
    else:  # unbiased; per example noisy
        assert abs(np.mean(log_p - truth)) < 0.05
        assert np.std(log_p - truth) < 0.5


def test_ddpm_log_prob_by_its_probability_flow_ode():
    from tests.test_diffusion import exact_model

    model = exact_model()
    x = np.random.default_rng(1).normal(MEAN, STD, size=(64, 2)).astype("float32")
    # The model's density at timestep 0: the data scaled by sqrt(abar_0) and
    # noised with variance 1 - abar_0.
    abar = model.alphas_cumprod[0]
    truth = gaussian_log_prob(x, np.sqrt(abar) * MEAN, abar * STD**2 + 1 - abar)
    np.testing.assert_allclose(model.log_prob(x, steps=64), truth, rtol=0.01, atol=0.01)


def test_time_densities_and_shift():
    for density, shift, median in [("uniform", 1.0, 0.5), ("logit_normal", 1.0, 0.5),
                                   ("logit_normal", 3.0, 0.75)]:
        model = FlowMatching((2,), time_density=density, shift=shift, hidden_units=8,
                             num_blocks=1)
        t = ops.convert_to_numpy(model.sample_times(20000, seed=0))
        assert 0 < t.min() and t.max() < 1
        np.testing.assert_allclose(np.median(t), median, atol=0.02)
        # logit-normal: fewer times near the ends than uniform
        near_ends = np.mean((t < 0.05) | (t > 0.95))
        assert near_ends < (0.02 if density == "logit_normal" and shift == 1 else 0.12)
    assert resolution_shift((16, 16, 1), (8, 8, 1)) == 2.0


def tiny_flow(data_shape, **kwargs):
    defaults = dict(hidden_units=16, num_blocks=1, channels=8, channel_multipliers=(1,), seed=0)
    return FlowMatching(data_shape, **{**defaults, **kwargs})


def test_vector_flow_matching_passes_the_shared_checks(tmp_path):
    data = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    check_model(lambda: tiny_flow((2,), time_density="logit_normal"), data, tmp_path,
                sample_shape=(2,), sample_kwargs={"steps": 3, "sampler": "heun"})


def test_conditional_dit_flow_matching_passes_the_shared_checks(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(32, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, size=32).astype("int32")
    options = {"patch_size": 4, "hidden_dim": 16, "depth": 1, "num_heads": 2,
               "positions": "sinusoidal"}
    check_model(lambda: tiny_flow((8, 8, 1), num_classes=3, denoiser="dit",
                                  denoiser_options=options), (x, y), tmp_path,
                sample_shape=(8, 8, 1),
                sample_kwargs={"steps": 2, "sampler": "midpoint", "labels": 1,
                               "guidance_scale": 2.0})


def test_dit_starts_as_zero_and_serves_ddpm_as_name_or_instance():
    dit = DiT((8, 8, 2), patch_size=2, hidden_dim=16, depth=2, num_heads=2, num_classes=3,
              seed=1)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 2)).astype("float32")
    inputs = [x, np.array([3.0, 700.0], "float32"), np.array([0, 3], "int32")]
    np.testing.assert_array_equal(ops.convert_to_numpy(dit(inputs)), 0.0)  # adaLN-Zero
    # Every weight matters once the zero-initialised ones move: patches go
    # back to their own places, and positions are learned.
    rng = np.random.default_rng(1)
    for v in dit.trainable_variables:
        v.assign(rng.normal(0, 0.2, v.shape).astype("float32"))
    out = ops.convert_to_numpy(dit(inputs))
    assert out.shape == x.shape and np.all(np.isfinite(out))
    assert any("position_embedding" in v.path for v in dit.trainable_variables)
    moved = x.copy()
    moved[:, :2, :2] += 1.0  # one patch
    changed = np.abs(ops.convert_to_numpy(dit([moved] + inputs[1:])) - out).sum(-1) > 1e-6
    assert changed.all()  # attention mixes every patch
    by_name = DDPM((8, 8, 2), timesteps=10, num_classes=3, denoiser="dit", seed=0,
                   denoiser_options={"patch_size": 2, "hidden_dim": 16, "depth": 1,
                                     "num_heads": 2})
    assert isinstance(by_name.denoiser, DiT)
    clone = DDPM.from_config(by_name.get_config())
    assert [v.shape for v in clone.weights] == [v.shape for v in by_name.weights]
    custom = DDPM((8, 8, 2), timesteps=10, num_classes=3, denoiser=dit)
    restored = DDPM.from_config(custom.get_config())
    assert isinstance(restored.denoiser, DiT) and restored.denoiser.depth == 2
    with pytest.raises(ValueError, match=r"`positions` must be one of"):
        DiT((8, 8, 1), positions="rotary")
    with pytest.raises(ValueError, match=r"divisible by patch_size=3"):
        DiT((8, 8, 1), patch_size=3)
    with pytest.raises(ValueError, match=r'`denoiser="dit"` needs image data'):
        FlowMatching((2,), denoiser="dit")


@pytest.mark.parametrize("cls", [DDPM, FlowMatching])
def test_seed_fixes_the_initial_weights(cls):
    kwargs = dict(hidden_units=16, num_blocks=1)
    a, b, c = cls((2,), seed=0, **kwargs), cls((2,), seed=0, **kwargs), cls((2,), seed=1, **kwargs)
    for va, vb in zip(a.weights, b.weights):
        np.testing.assert_array_equal(va.numpy(), vb.numpy())
    assert any(not np.array_equal(va.numpy(), vc.numpy()) for va, vc in zip(a.weights, c.weights))


def test_bad_arguments_are_clear_errors():
    model = tiny_flow((2,))
    for steps in (0, 2.5, "3", True):
        with pytest.raises(ValueError, match=r"`steps` must be an integer >= 1"):
            model.sample(4, steps=steps)
    with pytest.raises(ValueError, match=r"`sampler` must be one of \('euler'"):
        model.sample(4, sampler="ddim")
    with pytest.raises(ValueError, match=r"`time_density` must be one of"):
        FlowMatching((2,), time_density="cosmap")
    with pytest.raises(ValueError, match=r"`guidance_scale` needs a class-conditional model"):
        model.sample(4, guidance_scale=2.0)
    with pytest.raises(ValueError, match=r"`times` must be a strictly decreasing"):
        model.sample(4, times=[0.0, 1.0])
    with pytest.raises(ValueError, match=r"`shift` must be a finite number > 0"):
        FlowMatching((2,), shift=0.0)
    with pytest.raises(ValueError, match=r"`divergence` must be one of"):
        model.log_prob(np.zeros((2, 2), "float32"), divergence="trace")
    with pytest.raises(ValueError, match=r"`x` must have shape"):
        model.log_prob(np.zeros((2, 3), "float32"))
    ddpm = DDPM((2,), timesteps=20, hidden_units=8, num_blocks=1)
    with pytest.raises(ValueError, match=r"`steps` must be an integer >= 1; received steps=2.5"):
        ddpm.sample(4, steps=2.5)
    with pytest.raises(ValueError, match=r"`eta` must be a finite number >= 0"):
        ddpm.sample(4, eta=float("nan"))
    with pytest.raises(ValueError, match=r"`data_shape` must be"):
        DDPM((2.7,))
    with pytest.raises(ValueError, match=r"`timesteps` must be an integer >= 1"):
        DDPM((2,), timesteps=2.5)
    with pytest.raises(ValueError, match=r"`num_samples` must be an integer >= 1"):
        ddpm.sample(0)


@pytest.mark.parametrize("cls", [DDPM, FlowMatching])
def test_fit_rejects_out_of_range_and_non_integer_labels(cls):
    model = cls((2,), num_classes=3, hidden_units=8, num_blocks=1, seed=0)
    model.compile()
    x = np.zeros((8, 2), "float32")
    for labels, match in [(np.full(8, 3), r"in \[0, 3\).*received 3"),
                          (np.full(8, -1), r"in \[0, 3\).*received -1"),
                          (np.full(8, 1.5, "float32"), r"non-integer values")]:
        with pytest.raises(ValueError, match=r"`y` must be .*" + match):
            model.fit(x, labels, batch_size=8, verbose=0)
        # Batches from a generator are checked as they come.
        with pytest.raises(ValueError, match=r"`y` must be .*" + match):
            model.fit((batch for batch in [(x, labels)]), steps_per_epoch=1, verbose=0)
    model.fit(x, np.full(8, 2.0, "float32"), batch_size=8, epochs=1, verbose=0)


def check_mixed_precision(policy, data_shape, models):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        rng = np.random.default_rng(0)
        x = rng.uniform(-1, 1, size=(16,) + data_shape).astype("float32")
        y = rng.integers(0, 2, size=16).astype("int32")
        for make, kwargs in models:
            model = make()
            model.compile()
            history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
            assert np.isfinite(history.history["loss"][-1])
            assert all(v.dtype == "float32" for v in model.weights if "float" in str(v.dtype))
            samples = model.sample(2, steps=2, labels=1, guidance_scale=2.0, seed=0, **kwargs)
            assert samples.dtype == np.float32 and np.all(np.isfinite(samples))
    finally:
        keras.config.set_dtype_policy(previous)


@pytest.mark.parametrize("policy, cls", [("mixed_float16", DDPM), ("mixed_bfloat16", DDPM),
                                         ("mixed_float16", FlowMatching)])
def test_train_and_sample_under_mixed_precision(policy, cls):
    # (FlowMatching under mixed_bfloat16: the slow image test below.)
    kwargs = {"timesteps": 20, "min_snr_gamma": 5.0} if cls is DDPM else {}
    sampler = "dpm++2m" if cls is DDPM else "heun"
    check_mixed_precision(policy, (2,), [
        (lambda: cls((2,), num_classes=2, hidden_units=8, num_blocks=1, seed=0, **kwargs),
         {"sampler": sampler}),
    ])


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_image_denoisers_under_mixed_precision(policy):
    dit = {"patch_size": 4, "hidden_dim": 16, "depth": 1, "num_heads": 2}
    check_mixed_precision(policy, (8, 8, 1), [
        (lambda: DDPM((8, 8, 1), timesteps=20, num_classes=2, channels=8,
                      channel_multipliers=(1,), seed=0), {"sampler": "dpm++2m"}),
        (lambda: FlowMatching((8, 8, 1), num_classes=2, denoiser="dit", seed=0,
                              denoiser_options=dit), {"sampler": "heun"}),
    ])


def test_compiled_sampling_matches_uncompiled_and_follows_the_weights():
    model = tiny_flow((2,), num_classes=3, ema_decay=None)
    rng = np.random.default_rng(1)
    labels = np.array([0, 1, 2, 0], "int32")
    # One second-order sampler: on PyTorch each setting compiles with Inductor.
    for sampler, steps in [("heun", 3)]:
        for v in model.denoiser.trainable_variables:
            v.assign(rng.normal(0, 0.3, v.shape).astype("float32"))
        kwargs = dict(steps=steps, sampler=sampler, labels=labels, guidance_scale=2.0, seed=3)
        compiled = model.sample(4, jit_compile=True, **kwargs)
        np.testing.assert_allclose(compiled, model.sample(4, jit_compile=False, **kwargs),
                                   rtol=1e-4, atol=1e-4)
