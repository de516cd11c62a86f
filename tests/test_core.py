"""The seam: every promise of `zoo.core`, checked under the running backend."""

import keras
import numpy as np
import pytest
from keras import ops

from tests.core_models import Counter, NoiseProbe, Quantizer, TinyGAN, toy_data
from tests.helpers import check_model
from zoo.core import GenerativeModel, MultiOptimizer

BACKEND = keras.backend.backend()


def weights_of(layer):
    return [v.numpy().copy() for v in layer.trainable_variables]


def changed(before, after):
    return [not np.array_equal(a, b) for a, b in zip(before, after)]


def sgd_pair(generator_lr, discriminator_lr):
    return {
        "generator": keras.optimizers.SGD(generator_lr),
        "discriminator": keras.optimizers.SGD(discriminator_lr),
    }


def test_shared_helper_accepts_a_core_model(tmp_path):
    check_model(lambda: TinyGAN(seed=1), toy_data(64), tmp_path, sample_shape=(2,))


# (a) two players with separate optimizers; each update changes only its own.
def test_each_update_changes_only_its_player():
    model = TinyGAN(seed=0)
    model.compile(optimizer=sgd_pair(0.0, 0.1))
    g0, d0 = weights_of(model.generator), weights_of(model.discriminator)
    model.fit(toy_data(32), batch_size=32, epochs=1, verbose=0)
    assert not any(changed(g0, weights_of(model.generator)))
    assert all(changed(d0, weights_of(model.discriminator)))

    model = TinyGAN(seed=0)
    model.compile(optimizer=sgd_pair(0.1, 0.0))
    g0, d0 = weights_of(model.generator), weights_of(model.discriminator)
    model.fit(toy_data(32), batch_size=32, epochs=1, verbose=0)
    assert all(changed(g0, weights_of(model.generator)))
    assert not any(changed(d0, weights_of(model.discriminator)))


def test_players_have_their_own_optimizer_state():
    model = TinyGAN(seed=0)
    model.compile(optimizer={
        "generator": keras.optimizers.Adam(1e-4, beta_1=0.5),
        "discriminator": keras.optimizers.RMSprop(3e-4),
    })
    assert isinstance(model.optimizer, MultiOptimizer)
    assert isinstance(model.player_optimizer("discriminator"), keras.optimizers.RMSprop)
    np.testing.assert_allclose(
        float(model.player_optimizer("generator").learning_rate), 1e-4, rtol=1e-6
    )


# (b) several updates of one player per batch.
def test_critic_steps_update_the_critic_several_times_per_batch():
    model = TinyGAN(critic_steps=3, seed=0)
    model.compile()
    model.fit(toy_data(64), batch_size=16, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 4
    assert int(model.player_optimizer("discriminator").iterations.numpy()) == 12
    assert int(model.player_optimizer("generator").iterations.numpy()) == 4


# (c) a gradient penalty: d/dw of a loss containing |d critic / d x|^2.
def penalty_loss(model, x):
    grad = model.gradient(lambda v: model.discriminator(v), x)
    return ops.mean(ops.sum(grad**2, axis=1)) + ops.mean(model.discriminator(x))


@keras.saving.register_keras_serializable(package="zoo_tests")
class PenaltyOnly(TinyGAN):
    def train_step_logic(self, x, y=None, sample_weight=None):
        loss = self.minimize("discriminator", lambda: penalty_loss(self, x))
        return {"loss": loss, "d_loss": loss, "g_loss": 0.0 * loss}


def test_gradient_penalty_gradient_matches_finite_differences():
    keras.utils.set_random_seed(1)
    model = PenaltyOnly(seed=0)
    model.compile(optimizer=sgd_pair(0.0, 1.0))
    x = toy_data(16)
    before = weights_of(model.discriminator)
    model.fit(x, batch_size=16, epochs=1, verbose=0, shuffle=False)
    # SGD with learning rate 1: the step is minus the gradient.
    autodiff = [b - a for b, a in zip(before, weights_of(model.discriminator))]
    for v, value in zip(model.discriminator.trainable_variables, before):
        v.assign(value)

    def loss_at():
        return float(ops.convert_to_numpy(penalty_loss(model, ops.convert_to_tensor(x))))

    eps = 1e-2
    for v, grad in zip(model.discriminator.trainable_variables, autodiff):
        base = v.numpy().copy()
        flat = base.reshape(-1)
        for i in range(flat.size):
            plus, minus = flat.copy(), flat.copy()
            plus[i] += eps
            minus[i] -= eps
            v.assign(plus.reshape(base.shape))
            up = loss_at()
            v.assign(minus.reshape(base.shape))
            down = loss_at()
            v.assign(base)
            numeric = (up - down) / (2 * eps)
            np.testing.assert_allclose(
                grad.reshape(-1)[i], numeric, rtol=3e-2, atol=2e-3,
                err_msg=f"{v.path}[{i}]",
            )


def test_gradient_of_a_sum_is_per_example_input_gradient():
    model = TinyGAN(seed=0)
    x = ops.convert_to_tensor(toy_data(4))
    grad = ops.convert_to_numpy(model.gradient(lambda v: 3.0 * ops.sum(v**2, axis=1), x))
    np.testing.assert_allclose(grad, 6.0 * toy_data(4), rtol=1e-5)


# (d) a straight-through estimator lets gradients reach the encoder.
# (Without the estimator the encoder has no gradient, as TensorFlow's
# optimizer warns: that is the point of the check.)
@pytest.mark.filterwarnings("ignore:Gradients do not exist:UserWarning")
@pytest.mark.parametrize("straight_through", [True, False])
def test_straight_through_estimator_reaches_the_encoder(straight_through):
    model = Quantizer(straight_through=straight_through, seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    before = weights_of(model.encoder)
    model.fit(toy_data(32), batch_size=32, epochs=1, verbose=0)
    moved = changed(before, weights_of(model.encoder))
    # Rounding has zero gradient: without the estimator the encoder is stuck.
    assert all(moved) if straight_through else not any(moved)


# (e) noise from the model's own SeedGenerator.
def per_step_losses(seed, steps=4):
    model = NoiseProbe(seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    losses = []
    for _ in range(steps):
        logs = model.train_on_batch(toy_data(8), return_dict=True)
        losses.append(float(logs["loss"]))
    return losses


def test_seeded_noise_is_reproducible_varies_per_step_and_per_seed():
    first, again, other = per_step_losses(7), per_step_losses(7), per_step_losses(8)
    assert first == again
    assert first != other
    assert len(set(first)) == len(first), f"noise frozen into the step: {first}"


def test_noise_differs_between_steps_inside_fit():
    model = NoiseProbe(seed=3)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: seen.append(float(logs["loss"]))
    )
    model.fit(toy_data(32), batch_size=8, epochs=1, verbose=0, callbacks=[record])
    # Running means of distinct draws: all different.
    assert len(set(seen)) == 4, seen


# (f) BatchNorm moving statistics update during fit.
def test_batchnorm_statistics_update_during_fit():
    model = TinyGAN(batch_norm=True, seed=0)
    model.compile()
    bn = next(layer for layer in model.discriminator.layers
              if isinstance(layer, keras.layers.BatchNormalization))
    mean0, var0 = bn.moving_mean.numpy().copy(), bn.moving_variance.numpy().copy()
    model.fit(toy_data(64), batch_size=16, epochs=1, verbose=0)
    assert not np.allclose(mean0, bn.moving_mean.numpy())
    assert not np.allclose(var0, bn.moving_variance.numpy())


# (g) compiled once on JAX, inside tf.function on TensorFlow.
def test_step_is_traced_once_and_compiled():
    model = TinyGAN(critic_steps=2, penalty=1.0, seed=0)
    model.compile()
    model.fit(toy_data(64), batch_size=16, epochs=2, verbose=0)
    if BACKEND in ("jax", "tensorflow"):
        assert model.traces == 1, f"the step was traced {model.traces} times"
    else:
        assert model.traces == 8  # torch runs the step eagerly, once per batch
    if BACKEND == "tensorflow":
        assert model.eager_flags == [False]


def test_a_smaller_last_batch_and_a_later_fit_reuse_the_traced_step():
    # TensorFlow: the core's step function is traced once for the dataset's
    # element spec (batch dimension unknown); JAX compiles per batch shape;
    # PyTorch runs these short fits eagerly, once per batch.
    model = TinyGAN(seed=0)
    model.compile()
    x = toy_data(72)  # 4 batches of 16, then one of 8
    model.fit(x, batch_size=16, epochs=2, verbose=0)
    model.fit(x, batch_size=16, epochs=1, verbose=0)
    expected = {"tensorflow": 1, "jax": 2, "torch": 15}[BACKEND]
    assert model.traces == expected, f"the step was traced {model.traces} times"
    if BACKEND == "tensorflow":
        # The core's function (batch read eagerly, fed to the traced step),
        # not Keras's, which nests the step in a `tf.function` of the iterator.
        assert model.outer_graphs == [None]
    # One batch at a time (`train_on_batch`): one more trace, then reused.
    for _ in range(2):
        logs = model.train_on_batch(x[:16], return_dict=True)
    assert np.isfinite(logs["loss"])
    expected = {"tensorflow": 2, "jax": 3, "torch": 17}[BACKEND]
    assert model.traces == expected, f"the step was traced {model.traces} times"


def test_steps_per_execution_runs_the_same_steps():
    # Several steps per call (JAX, TensorFlow) train exactly as one per call,
    # a smaller last batch included; PyTorch's trainer rejects it clearly.
    weights = TinyGAN(seed=0).get_weights()

    def trained(steps_per_execution):
        model = TinyGAN(seed=0)
        model.set_weights(weights)
        model.compile(steps_per_execution=steps_per_execution)
        history = model.fit(toy_data(72), batch_size=16, epochs=2, shuffle=False, verbose=0)
        return model, history.history

    if BACKEND == "torch":
        with pytest.raises(ValueError, match="steps_per_execution"):
            trained(4)
        return
    one, one_logs = trained(1)
    four, four_logs = trained(4)
    for a, b in zip(one.get_weights(), four.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    for key, value in one_logs.items():
        np.testing.assert_allclose(four_logs[key], value, rtol=1e-5)
    assert int(four.optimizer.iterations.numpy()) == 10


# (h) save / load restores weights and every optimizer's state.
def test_fit_resumes_exactly_after_save_and_load(tmp_path):
    x = toy_data(64)

    def fresh():
        keras.utils.set_random_seed(4)
        model = TinyGAN(critic_steps=2, penalty=0.5, batch_norm=True, seed=11)
        model.compile()
        return model

    straight = fresh()
    history = straight.fit(x, batch_size=16, epochs=2, verbose=0, shuffle=False)

    first = fresh()
    first.fit(x, batch_size=16, epochs=1, verbose=0, shuffle=False)
    path = str(tmp_path / "half.keras")
    first.save(path)
    resumed = keras.saving.load_model(path)
    assert isinstance(resumed.optimizer, MultiOptimizer)
    assert int(resumed.optimizer.iterations.numpy()) == 4
    second = resumed.fit(x, batch_size=16, epochs=1, verbose=0, shuffle=False)

    for name in ("d_loss", "g_loss"):
        np.testing.assert_allclose(
            second.history[name][0], history.history[name][1], rtol=1e-5, atol=1e-6
        )
    for a, b in zip(resumed.weights, straight.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


# (i) trackers reset each epoch; "loss" drives Keras callbacks; evaluate.
def test_trackers_reset_every_epoch():
    model = Counter()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(toy_data(32), batch_size=8, epochs=2, verbose=0)
    # Steps 0..3, then 4..7: epoch means 1.5 and 5.5 (3.5 if never reset).
    np.testing.assert_allclose(history.history["loss"], [1.5, 5.5])
    assert [m.name for m in model.metrics] == ["loss", "skipped_updates"]


def test_terminate_on_nan_stops_training():
    model = Counter(nan_after=2.5)
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(toy_data(64), batch_size=8, epochs=3, verbose=0,
              callbacks=[keras.callbacks.TerminateOnNaN()])
    assert int(model.optimizer.iterations.numpy()) == 4


def test_early_stopping_reads_the_loss():
    model = Counter()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    history = model.fit(toy_data(16), batch_size=8, epochs=10, verbose=0,
                        callbacks=[keras.callbacks.EarlyStopping("loss", patience=1)])
    assert len(history.history["loss"]) == 2


def test_evaluate_runs_the_test_step():
    model = Counter()
    model.compile()
    x = toy_data(32)
    result = model.evaluate(x, batch_size=8, verbose=0, return_dict=True)
    np.testing.assert_allclose(result["loss"], x.mean(), rtol=1e-5)
    # Evaluating updates nothing.
    assert int(model.optimizer.iterations.numpy()) == 0


def test_gan_evaluate_reports_every_log():
    model = TinyGAN(seed=0, penalty=1.0)
    model.compile()
    result = model.evaluate(toy_data(32), batch_size=16, verbose=0, return_dict=True)
    assert set(result) == {"loss", "d_loss", "g_loss"}
    assert all(np.isfinite(v) for v in result.values())


# compile: defaults, per-player optimizers, clear errors.
def test_bare_compile_uses_per_player_defaults():
    model = TinyGAN(seed=0)
    model.compile()
    assert model.optimizer.players == ["generator", "discriminator"]
    model.fit(toy_data(16), batch_size=8, epochs=1, verbose=0)


def test_compile_errors_name_what_was_expected():
    model = TinyGAN()
    with pytest.raises(ValueError, match=r"Unknown player.*'critic'.*generator"):
        model.compile(optimizer={"generator": "adam", "critic": "adam"})
    with pytest.raises(ValueError, match=r"Missing optimizer.*discriminator"):
        model.compile(optimizer={"generator": "adam"})
    with pytest.raises(ValueError, match=r"pass `optimizer` as a dict"):
        model.compile(optimizer="adam")


def test_single_player_model_takes_a_plain_optimizer():
    model = Quantizer()
    model.compile(optimizer="sgd")
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    model.compile(optimizer={"model": "adam"})
    assert isinstance(model.optimizer, keras.optimizers.Adam)


def test_minimize_rejects_an_unknown_player():
    class Wrong(TinyGAN):
        def train_step_logic(self, x, y=None, sample_weight=None):
            loss = self.minimize("critic", lambda: ops.mean(x))
            return {"loss": loss, "d_loss": loss, "g_loss": loss}

    model = Wrong()
    model.compile()
    with pytest.raises(ValueError, match=r"Unknown player 'critic'"):
        model.fit(toy_data(8), batch_size=8, verbose=0)


@pytest.mark.parametrize(
    "data, message",
    [
        (np.zeros((16, 3), "float32"), r"shape \(batch, 2\), received data of shape \(\w+, 3\)"),
        (np.zeros((16, 2, 1), "float32"), r"shape \(batch, 2\)"),
        (np.zeros((16, 2), "int32"), r"expects float data.*int32"),
    ],
)
def test_wrong_data_is_a_clear_error(data, message):
    model = TinyGAN()
    model.compile()
    with pytest.raises(ValueError, match=message):
        model.fit(data, batch_size=8, verbose=0)


def test_logs_must_carry_loss():
    class NoLoss(TinyGAN):
        def train_step_logic(self, x, y=None, sample_weight=None):
            d = self.minimize("discriminator", lambda: self.discriminator_loss(x))
            return {"d_loss": d}

    model = NoLoss()
    model.compile()
    with pytest.raises(ValueError, match=r"'loss' entry"):
        model.fit(toy_data(8), batch_size=8, verbose=0)


def test_unbuilt_networks_are_a_clear_error():
    class Unbuilt(GenerativeModel):
        def __init__(self):
            super().__init__()
            self.net = keras.layers.Dense(3)

    with pytest.raises(ValueError, match=r"unbuilt layers"):
        Unbuilt().compile()


# What Keras optimizers do keeps working through the core.
def test_gradient_accumulation_applies_every_second_step():
    model = TinyGAN(seed=0)
    model.compile(optimizer={
        "generator": keras.optimizers.SGD(0.0),
        "discriminator": keras.optimizers.SGD(0.1, gradient_accumulation_steps=2),
    })
    d0 = weights_of(model.discriminator)
    model.fit(toy_data(8), batch_size=8, epochs=1, verbose=0)
    assert not any(changed(d0, weights_of(model.discriminator)))
    model.fit(toy_data(8), batch_size=8, epochs=1, verbose=0)
    assert all(changed(d0, weights_of(model.discriminator)))


def test_global_clipnorm_bounds_each_update():
    model = TinyGAN(seed=0)
    model.compile(optimizer={
        "generator": keras.optimizers.SGD(0.0),
        "discriminator": keras.optimizers.SGD(1.0, global_clipnorm=1e-3),
    })
    d0 = weights_of(model.discriminator)
    model.fit(toy_data(8), batch_size=8, epochs=1, verbose=0)
    step = np.sqrt(sum(np.sum((a - b) ** 2) for a, b in zip(d0, weights_of(model.discriminator))))
    assert 0 < step <= 1e-3 * 1.001


def test_learning_rate_callbacks_adjust_every_player():
    model = TinyGAN(seed=0)
    model.compile(optimizer={
        "generator": keras.optimizers.Adam(1e-3),
        "discriminator": keras.optimizers.Adam(4e-3),
    })
    halve = keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr / 2)
    history = model.fit(toy_data(16), batch_size=8, epochs=1, verbose=0, callbacks=[halve])
    np.testing.assert_allclose(float(model.optimizer["generator"].learning_rate), 5e-4, rtol=1e-6)
    np.testing.assert_allclose(float(model.optimizer["discriminator"].learning_rate), 2e-3, rtol=1e-6)
    assert "learning_rate_discriminator" in history.history


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_trains_with_loss_scaling(policy):
    keras.config.set_dtype_policy(policy)
    try:
        model = TinyGAN(seed=0)
        model.compile()
        history = model.fit(toy_data(32), batch_size=16, epochs=1, verbose=0)
    finally:
        keras.config.set_dtype_policy("float32")
    scaled = [isinstance(o, keras.optimizers.LossScaleOptimizer)
              for o in model.optimizer.optimizers]
    assert all(scaled) if policy == "mixed_float16" else not any(scaled)
    assert np.all(np.isfinite(history.history["loss"]))


# Compiled inference loops (sampling, generation).
class LoopSampler(TinyGAN):
    """Compiled loops: one through the generator, one summing noise draws."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.loop_traces = 0
        self._loop = self.compile_function(self._five_generator_calls)

    def _five_generator_calls(self, z):
        self.loop_traces += 1

        def body(i, total):
            return total + self.generator(z)

        return ops.fori_loop(0, 5, body, ops.zeros((ops.shape(z)[0], 2)))

    def five_outputs(self, n):
        return ops.convert_to_numpy(self._loop(ops.zeros((n, self.latent_dim))))

    def draws(self, n, seed=None):
        def fn(shape_ref):
            def body(i, acc):
                return acc + keras.random.normal(ops.shape(shape_ref), seed=self.sampling_seed)
            return self.fori_loop(0, 3, body, ops.zeros_like(shape_ref))
        return ops.convert_to_numpy(self.compile_function(fn)(ops.zeros((n, 2)), seed=seed))


def test_compiled_function_is_seeded_and_follows_new_weights():
    model = LoopSampler(seed=0)
    a = model.draws(4000, seed=1)
    np.testing.assert_array_equal(a, model.draws(4000, seed=1))
    assert not np.array_equal(a, model.draws(4000, seed=2))
    # Three independent draws sum to std sqrt(3); one draw frozen into the
    # loop body would give std 3.
    np.testing.assert_allclose(a.std(), np.sqrt(3.0), rtol=0.05)

    before = model.five_outputs(3)
    for v in model.generator.trainable_variables:
        v.assign(v.numpy() + 0.5)
    after = model.five_outputs(3)
    assert not np.allclose(before, after), "stale weights baked into the compiled loop"
    expected = 5 * ops.convert_to_numpy(model.generator(ops.zeros((3, model.latent_dim))))
    np.testing.assert_allclose(after, expected, rtol=1e-5, atol=1e-5)
    if BACKEND in ("jax", "tensorflow"):
        assert model.loop_traces == 1


def test_compiled_function_rejects_a_bad_seed():
    model = LoopSampler()
    with pytest.raises(ValueError, match=r"`seed` must be an int"):
        model.draws(2, seed=1.5)


@pytest.mark.parametrize("jit_compile", [True, "traced", False])
def test_a_compiled_step_reads_the_weights_without_writing_them(jit_compile):
    # A step may update a copy of a weight as scratch space: the traced
    # graph, whose copies of unwritten tensors are dropped, must keep that
    # copy (the weight itself unchanged), and read the weights as they are
    # at each call.
    from zoo.core import compile_step

    model = LoopSampler(seed=0)
    kernel = model.generator.trainable_variables[0]
    rows, columns = kernel.shape

    def fn(i, total):
        scratch = ops.slice_update(kernel.value, [0, 0], ops.zeros((1, columns)))
        return total + ops.sum(scratch) + ops.cast(i, "float32")

    step = compile_step(model, fn, jit_compile=jit_compile)
    loop = model.compile_function(lambda total: ops.fori_loop(0, 2, step, total))
    for value in (1.0, 2.0):
        kernel.assign(np.full((rows, columns), value, np.float32))
        total = float(ops.convert_to_numpy(loop(ops.zeros(()))))
        assert total == 2 * value * (rows - 1) * columns + 1
        np.testing.assert_array_equal(ops.convert_to_numpy(kernel), value)


def test_compiles_steps_says_when_a_loop_compiles_its_steps():
    from zoo.core import LONG_LOOP, compiles_steps

    assert compiles_steps(True, 1) is True
    assert compiles_steps(False, 10 * LONG_LOOP) is False
    assert compiles_steps("auto", LONG_LOOP) is False
    # "auto" on PyTorch, whose loops run in Python: a long loop's steps
    # compiled, as are those of a setting compiled before; a short loop's
    # traced once loops of its setting have run more than LONG_LOOP steps
    # (this one included). On JAX and TensorFlow nothing: the loop
    # compiles whole.
    python_loops = BACKEND == "torch"
    assert compiles_steps("auto", LONG_LOOP + 1) is python_loops
    assert compiles_steps("auto", LONG_LOOP + 1, 5 * LONG_LOOP) is python_loops
    assert compiles_steps("auto", 5, compiled_before=True) is python_loops
    assert compiles_steps("auto", 5, LONG_LOOP - 5) is False
    assert compiles_steps("auto", 5, LONG_LOOP - 4) == ("traced" if python_loops else False)
    assert compiles_steps("auto", 5, 5 * LONG_LOOP) == ("traced" if python_loops else False)
    with pytest.raises(ValueError, match=r'`jit_compile` must be "auto", True or False'):
        compiles_steps("yes", 5)


@pytest.mark.skipif(BACKEND != "torch", reason="PyTorch's batch ends on a CPU")
def test_torch_batch_ends_run_in_the_steps_thread_on_a_cpu():
    # Keras hands async-safe callbacks' batch ends to a worker thread, which
    # on a CPU only contends with the next step for the GIL: the core keeps
    # them in the step's thread there, in `fit`, its validation and `evaluate`.
    import threading

    from keras.src.backend.torch.core import get_device

    if get_device() != "cpu":
        pytest.skip("on an accelerator Keras's worker thread stays")

    class Where(keras.callbacks.Callback):
        async_safe = True

        def __init__(self):
            super().__init__()
            self.threads = set()

        def on_train_batch_end(self, batch, logs=None):
            self.threads.add(threading.get_ident())

        def on_test_batch_end(self, batch, logs=None):
            self.threads.add(threading.get_ident())

    model = Counter()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    fitting, evaluating = Where(), Where()
    model.fit(toy_data(32), batch_size=8, validation_split=0.25, verbose=0,
              callbacks=[fitting])
    model.evaluate(toy_data(16), batch_size=8, verbose=0, callbacks=[evaluating])
    assert fitting.threads == evaluating.threads == {threading.get_ident()}
