"""Callbacks inside real `fit` calls, beside Keras's own callbacks.

Toy models with known updates give exact references: `Drift`'s weights move
by a fixed vector each step (so the EMA is computed by hand), `TwoRegressors`
has closed-form gradients (so the gradient norms are too).
"""

import csv
import os
import warnings

import keras
import numpy as np
import pytest
from keras import ops

from callbacks import EMA, Evaluate, GradientMonitor, LatentInterpolation, SampleGrid
from callbacks.latent_interpolation import interpolate
from tests.core_models import TinyGAN, toy_data
from zoo.core import GenerativeModel
from zoo.data import digits
from zoo.gan import GAN
from zoo.vae import VAE

STEP = np.array([1.0, 2.0, 3.0], dtype="float32")


@keras.saving.register_keras_serializable(package="zoo_callback_tests")
class Drift(GenerativeModel):
    """SGD(1) on loss -sum(w * STEP): every step adds STEP to w; evaluating
    reports mean(w)."""

    data_shape = (1,)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = self.add_weight(shape=(3,), initializer="zeros", name="w")

    def default_optimizer(self, player):
        return keras.optimizers.SGD(1.0)

    def train_step_logic(self, x, y=None, sample_weight=None):
        return {"loss": self.minimize("model", lambda: -ops.sum(self.w * STEP))}

    def test_step_logic(self, x, y=None, sample_weight=None):
        return {"loss": ops.mean(self.w) + 0.0 * ops.mean(x)}


class TwoRegressors(GenerativeModel):
    """Players "a" and "b", each a Dense regression fitting y with SGD(0):
    the weights never move, so every step's gradient is known in closed form."""

    data_shape = (3,)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.a = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="dense")], name="a")
        self.b = keras.Sequential(
            [keras.Input((3,)), keras.layers.Dense(2, name="hidden"), keras.layers.Dense(1, name="out")],
            name="b",
        )

    def players(self):
        return {"a": self.a, "b": self.b}

    def default_optimizer(self, player):
        return keras.optimizers.SGD(0.0)

    def train_step_logic(self, x, y=None, sample_weight=None):
        la = self.minimize("a", lambda: ops.mean((self.a(x) - y) ** 2))
        lb = self.minimize("b", lambda: ops.mean((self.b(x) - y) ** 2))
        return {"loss": la + lb}


def _drift_data(n=16):
    return np.zeros((n, 1), "float32")


def _reference_ema(steps, decay, start=0):
    average, w = np.zeros(3), np.zeros(3)
    history = []
    for t in range(1, steps + 1):
        w = t * STEP
        average = decay * average + (1 - decay) * w
        history.append(average.copy())
    return history


class Recorder(keras.callbacks.Callback):
    """What the model holds at each epoch's start and end."""

    def __init__(self):
        super().__init__()
        self.begin, self.end = [], []

    def on_train_batch_begin(self, batch, logs=None):
        if batch == 0:
            self.begin.append(self.model.w.numpy().copy())

    def on_epoch_end(self, epoch, logs=None):
        self.end.append(self.model.w.numpy().copy())


# ----------------------------------------------------------------------
# EMA


def test_ema_matches_hand_average_and_is_swapped_for_evaluation(tmp_path):
    decay = 0.9
    model = Drift()
    model.compile()
    ema, recorder = EMA(decay), Recorder()
    x = _drift_data()
    history = model.fit(
        x, batch_size=4, epochs=3, verbose=0, validation_data=(x,),
        callbacks=[ema, recorder, keras.callbacks.TerminateOnNaN(),
                   keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))],
    )
    reference = _reference_ema(12, decay)
    # After fit the averaged weights stay in; the training weights are kept.
    np.testing.assert_allclose(model.w.numpy(), reference[-1], rtol=1e-5)
    np.testing.assert_allclose(ema.averaged_weights[0], reference[-1], rtol=1e-5)
    assert ema.swapped_in
    # Validation saw the average after epochs 1, 2, 3 (4 steps each).
    np.testing.assert_allclose(
        history.history["val_loss"], [reference[4 * e - 1].mean() for e in (1, 2, 3)], rtol=1e-5
    )
    # Callbacks after EMA see the average at epoch end; training resumes
    # from the training weights (4, 8 steps of STEP).
    np.testing.assert_allclose(recorder.end, [reference[4 * e - 1] for e in (1, 2, 3)], rtol=1e-5)
    np.testing.assert_allclose(recorder.begin, [0 * STEP, 4 * STEP, 8 * STEP], rtol=1e-6)
    # A second fit with the same callback continues both.
    model.fit(x, batch_size=4, epochs=1, verbose=0, callbacks=[ema])
    np.testing.assert_allclose(model.w.numpy(), _reference_ema(16, decay)[-1], rtol=1e-5)
    ema.swap_out()
    np.testing.assert_allclose(model.w.numpy(), 16 * STEP, rtol=1e-6)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 2:
            raise RuntimeError("interrupted")


@pytest.mark.parametrize("ema_first", [True, False])
def test_ema_resumes_exactly_with_backup_and_restore(tmp_path, ema_first):
    decay, x = 0.8, _drift_data()

    def callbacks(*extra):
        ema = EMA(decay)
        backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))
        return ema, ([ema, backup] if ema_first else [backup, ema]) + list(extra)

    model = Drift()
    model.compile()
    _, first = callbacks(Interrupt())
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(x, batch_size=4, epochs=3, verbose=0, callbacks=first)
    resumed = Drift()
    resumed.compile()
    ema, second = callbacks()
    history = resumed.fit(x, batch_size=4, epochs=3, verbose=0, callbacks=second)
    assert len(history.epoch) == 1  # only the third epoch ran again
    np.testing.assert_allclose(resumed.w.numpy(), _reference_ema(12, decay)[-1], rtol=1e-5)
    ema.swap_out()
    np.testing.assert_allclose(resumed.w.numpy(), 12 * STEP, rtol=1e-6)


def test_ema_checkpoint_saves_the_average_and_loads(tmp_path):
    decay, x = 0.5, _drift_data()
    model = Drift()
    model.compile()
    path = str(tmp_path / "epoch_{epoch}.keras")
    model.fit(x, batch_size=4, epochs=2, verbose=0,
              callbacks=[EMA(decay), keras.callbacks.ModelCheckpoint(path)])
    reference = _reference_ema(8, decay)
    loaded = keras.saving.load_model(str(tmp_path / "epoch_1.keras"))
    np.testing.assert_allclose(loaded.w.numpy(), reference[3], rtol=1e-5)
    # Resuming from that checkpoint continues the training weights and average.
    ema = EMA(decay)
    loaded.fit(x, batch_size=4, epochs=1, verbose=0, callbacks=[ema])
    np.testing.assert_allclose(loaded.w.numpy(), reference[7], rtol=1e-5)


def test_ema_on_a_gan_with_checkpoint_and_terminate_on_nan(tmp_path):
    model = GAN((2,), 4, hidden_units=(16,), seed=1)
    model.compile()
    ema = EMA(0.9)
    x = toy_data(64)
    model.fit(x, batch_size=32, epochs=2, verbose=0,
              callbacks=[ema, keras.callbacks.TerminateOnNaN(),
                         keras.callbacks.ModelCheckpoint(str(tmp_path / "gan.keras"))])
    averaged = ema.averaged_weights
    for v, a in zip(model.trainable_variables, averaged):
        np.testing.assert_allclose(v.numpy(), a, rtol=1e-6)
    loaded = keras.saving.load_model(str(tmp_path / "gan.keras"))
    for v, a in zip(loaded.trainable_variables, averaged):
        np.testing.assert_allclose(v.numpy(), a, rtol=1e-6)
    np.testing.assert_allclose(loaded.sample(8, seed=3), model.sample(8, seed=3), atol=1e-5)
    ema.swap_out()
    assert not np.allclose(model.trainable_variables[0].numpy(), averaged[0])


# ----------------------------------------------------------------------
# GradientMonitor


def _regression_data(n=32):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, 3)).astype("float32")
    return x, (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")


def _dense_grad_norm(x, y, layers):
    """Closed-form gradient norms of mean((MLP(x) - y)^2) for linear layers."""
    acts = [x]
    for kernel, bias in layers:
        acts.append(acts[-1] @ kernel + bias)
    delta = 2 * (acts[-1] - y) / len(x)
    norms = []
    for i in reversed(range(len(layers))):
        kernel = layers[i][0]
        grad_k, grad_b = acts[i].T @ delta, delta.sum(0)
        norms.append(np.sqrt((grad_k**2).sum() + (grad_b**2).sum()))
        delta = delta @ kernel.T
    return norms[::-1]


def test_gradient_norms_equal_closed_form(tmp_path):
    x, y = _regression_data()
    model = TwoRegressors()
    model.compile()
    monitor = GradientMonitor(csv_path=str(tmp_path / "grads.csv"))
    history = model.fit(x, y, batch_size=32, epochs=2, verbose=0,
                        callbacks=[monitor, keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))])
    values = lambda layer: [w.numpy() for w in layer.weights]  # noqa: E731
    (na,) = _dense_grad_norm(x, y, [values(model.a.layers[0])])
    nb = _dense_grad_norm(x, y, [values(model.b.layers[0]), values(model.b.layers[1])])
    logs = history.history
    np.testing.assert_allclose(logs["grad_norm/a"], [na, na], rtol=1e-4)
    np.testing.assert_allclose(logs["grad_norm/a/dense"], [na, na], rtol=1e-4)
    np.testing.assert_allclose(logs["grad_norm/b/hidden"], [nb[0]] * 2, rtol=1e-4)
    np.testing.assert_allclose(logs["grad_norm/b/out"], [nb[1]] * 2, rtol=1e-4)
    np.testing.assert_allclose(logs["grad_norm/b"], [np.hypot(*nb)] * 2, rtol=1e-4)
    with open(tmp_path / "grads.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and float(rows[1]["grad_norm/b/out"]) == pytest.approx(nb[1], rel=1e-4)
    with open(tmp_path / "log.csv") as f:
        assert "grad_norm/a" in next(csv.reader(f))
    # Off again after fit: plain steps report no norms.
    history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    assert not any(k.startswith("grad_norm") for k in history.history)


def test_gradient_monitor_warns_and_traces_once():
    model = TinyGAN(critic_steps=2, seed=0)
    model.compile()
    x = toy_data(64)
    compiled = keras.backend.backend() != "torch"  # torch runs eagerly
    monitor = GradientMonitor(every=2, vanish_threshold=1e5, explode_threshold=1e6)
    with pytest.warns(UserWarning, match="vanishing gradients"):
        history = model.fit(x, batch_size=32, epochs=3, verbose=0, callbacks=[monitor])
    assert model.traces == 1 or not compiled  # traced once, not once per step
    layers = {f"grad_norm/discriminator/{layer.name}"
              for layer in model.discriminator.layers if layer.trainable_weights}
    assert len(layers) == 2 and layers <= set(history.history)  # named after the layers
    steps = sorted({step for step, *_ in monitor.warnings_seen})
    assert steps == [1, 3, 5]  # every=2 over 6 steps
    monitor = GradientMonitor(vanish_threshold=0.0, explode_threshold=1e-12)
    with pytest.warns(UserWarning, match="exploding gradients"):
        model.fit(x, batch_size=32, epochs=1, verbose=0, callbacks=[monitor])
    assert model.traces == 1 or not compiled  # the step with norms is reused


# ----------------------------------------------------------------------
# Evaluate with ModelCheckpoint, EarlyStopping, CSVLogger


def test_evaluate_drives_checkpoint_and_early_stopping(tmp_path):
    model = Drift()
    model.compile()
    # mean(w) after epoch e (0-based) is 8 (e + 1): distances 9, 1, 7, ...
    distance = Evaluate(lambda m: abs(float(np.mean(m.w.numpy())) - 17.0), name="distance")
    best = str(tmp_path / "best.weights.h5")
    history = model.fit(
        _drift_data(), batch_size=4, epochs=6, verbose=0,
        callbacks=[
            distance,
            keras.callbacks.ModelCheckpoint(best, monitor="distance", mode="min",
                                            save_best_only=True, save_weights_only=True),
            keras.callbacks.EarlyStopping(monitor="distance", mode="min", patience=0),
            keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
        ],
    )
    assert history.history["distance"] == pytest.approx([9.0, 1.0, 7.0])
    assert len(distance.timings) == 3
    model.load_weights(best)
    np.testing.assert_allclose(model.w.numpy(), 8 * STEP)
    with open(tmp_path / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["distance"]) for r in rows] == pytest.approx([9.0, 1.0, 7.0])


def test_evaluate_every_and_dict_results():
    model = Drift()
    model.compile()
    calls = []

    def metrics(m):
        calls.append(1)
        return {"mean_w": float(np.mean(m.w.numpy())), "max_w": float(np.max(m.w.numpy()))}

    history = model.fit(_drift_data(), batch_size=4, epochs=5, verbose=0,
                        callbacks=[Evaluate(metrics, every=2)])
    assert len(calls) == 3  # after epochs 2, 4 and the last, 5
    assert history.history["mean_w"] == pytest.approx([16.0, 32.0, 40.0])


# ----------------------------------------------------------------------
# Pictures


def _png_size(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.size


def test_sample_grid_frames_are_comparable_and_reach_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    model = GAN((2,), 4, hidden_units=(16,), seed=1)
    frozen = {"generator": keras.optimizers.SGD(0.0), "discriminator": keras.optimizers.SGD(0.0)}
    model.compile(optimizer=frozen, run_eagerly=True)  # no compile time
    grid = SampleGrid(str(tmp_path / "frames"), num=128, seed=5, log_dir=str(tmp_path / "tb"))
    model.fit(toy_data(64), batch_size=32, epochs=2, verbose=0,
              callbacks=[grid, keras.callbacks.TensorBoard(str(tmp_path / "tb_keras"))])
    assert [os.path.basename(p) for p in grid.paths] == [
        "samples_epoch_0001.png", "samples_epoch_0002.png"]
    # Unchanged weights + fixed seed: identical frames.
    with open(grid.paths[0], "rb") as a, open(grid.paths[1], "rb") as b:
        assert a.read() == b.read()
    assert any(f.startswith("events") for f in os.listdir(tmp_path / "tb"))
    assert os.listdir(tmp_path / "tb_keras")


def test_sample_grid_and_interpolation_on_a_vae(tmp_path):
    images = digits("train")[0][:64]
    model = VAE((8, 8, 1), 2, num_levels=17, filters=4, hidden_units=(16,), seed=0)
    model.compile()
    grid = SampleGrid(str(tmp_path), every=2, num=16)
    lerp = LatentInterpolation(str(tmp_path), num_rows=3, steps=5)
    model.fit(images, batch_size=64, epochs=3, verbose=0, callbacks=[EMA(0.5), grid, lerp])
    assert [os.path.basename(p) for p in grid.paths] == [
        "samples_epoch_0002.png", "samples_epoch_0003.png"]
    # 16 images of 8x8 with 1-pixel padding, 4x scale: 4 * (4 * 9 + 1).
    assert _png_size(grid.paths[0]) == (148, 148)
    assert _png_size(lerp.paths[-1]) == (4 * (5 * 9 + 1), 4 * (3 * 9 + 1))
    decoded = lerp.decode(model)
    np.testing.assert_allclose(decoded, model.decode(lerp.latent_paths(2)), atol=1e-6)


def test_interpolation_on_a_gan_and_slerp():
    model = GAN((2,), 3, hidden_units=(16,), seed=1)
    model.compile()
    lerp = LatentInterpolation("/unused", num_rows=2, steps=4)
    out = lerp.decode(model)
    assert out.shape == (8, 2)
    z = lerp.latent_paths(3).reshape(2, 4, 3)
    rng = np.random.default_rng(0)
    np.testing.assert_allclose(z[:, 0], rng.standard_normal((2, 3)), rtol=1e-6)
    np.testing.assert_allclose(z[:, -1], rng.standard_normal((2, 3)), rtol=1e-6)
    # Slerp between orthogonal unit vectors stays on the unit circle.
    path = interpolate(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), 5)
    np.testing.assert_allclose(np.linalg.norm(path, axis=-1), 1.0)
    with pytest.raises(ValueError, match="latent_dim"):
        LatentInterpolation("/unused").decode(Drift())


# ----------------------------------------------------------------------
# Argument errors


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: EMA(1.0), "decay"),
        (lambda: EMA("0.9"), "decay"),
        (lambda: SampleGrid("/tmp", every=0), "every"),
        (lambda: SampleGrid(None), "directory"),
        (lambda: SampleGrid("/tmp", num=2.5), "num"),
        (lambda: GradientMonitor(every=-1), "every"),
        (lambda: GradientMonitor(vanish_threshold=2.0, explode_threshold=1.0), "vanish_threshold"),
        (lambda: GradientMonitor(explode_threshold=-1), "explode_threshold"),
        (lambda: Evaluate(3), "metric"),
        (lambda: Evaluate(len, name=""), "name"),
        (lambda: LatentInterpolation("/tmp", steps=1), "steps"),
        (lambda: LatentInterpolation("/tmp", method="cubic"), "method"),
        (lambda: LatentInterpolation("/tmp", num_rows=2, labels=[1, 2, 3]), "labels"),
    ],
)
def test_argument_errors(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_sample_grid_rejects_other_shapes(tmp_path):
    class Tokens(Drift):
        def sample(self, num, seed=None):
            return np.zeros((num, 7), "int32")

    model = Tokens()
    model.compile()
    with pytest.raises(ValueError, match=r"shape \(4, 7\)"):
        model.fit(_drift_data(4), batch_size=4, epochs=1, verbose=0,
                  callbacks=[SampleGrid(str(tmp_path), num=4)])
