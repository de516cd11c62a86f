"""`compile(jit_compile=True)`: the compiled training step, on every backend.

On PyTorch this is the core's traced, TorchInductor-compiled step
(`zoo/core/torch_step.py`); on JAX and TensorFlow the same tests exercise
their `jax.jit` / XLA `tf.function` step. Each compiled step must do what
the eager step does: same weights, optimizer state, BatchNorm statistics,
seed states and logs after several steps from the same start.
"""

import warnings

import keras
import numpy as np
from keras import ops
import pytest

from callbacks import EMA
from tests.core_models import Counter, NoiseProbe, TinyGAN, toy_data
from zoo.core import GenerativeModel

BACKEND = keras.backend.backend()

# TorchInductor compiles a training step in 20 s to minutes on a small CPU
# (seconds on JAX and TensorFlow, and on PyTorch when its on-disk cache has
# the graph): the tests that compile a two-network model are slow there.
torch_slow = pytest.mark.slow if BACKEND == "torch" else (lambda test: test)


def state_of(model, metrics=True):
    variables = list(model.variables) + list(model.optimizer.variables)
    if metrics:  # the trackers (not saved: they restart every epoch)
        variables += list(model.metrics_variables)
    # By position: layer names carry a per-process counter.
    return {i: (v.path, np.array(v.numpy())) for i, v in enumerate(variables)}


def train(jit_compile, steps=4, weights=None, **kwargs):
    model = TinyGAN(seed=0, **kwargs)
    if weights is not None:  # the networks' initializers are unseeded
        model.set_weights(weights)
    if jit_compile == "auto":
        model.compile()
    elif jit_compile:
        # TensorFlow's stateless random ops draw other numbers under XLA,
        # so there the eager step is compared with the plain `tf.function`.
        model.compile(jit_compile=BACKEND != "tensorflow")
    else:
        model.compile(run_eagerly=True)
    x = toy_data(16 * steps)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no eager fallback
        history = model.fit(x, batch_size=16, epochs=1, shuffle=False, verbose=0)
    return model, history.history


# Not slow, though it compiles a two-network step on PyTorch (1-2 min with a
# cold Inductor cache): it is the compiled step's main guarantee.
@pytest.mark.parametrize("step", ["compiled", "traced"])
def test_compiled_step_equals_the_eager_step(step, monkeypatch):
    # Two players, two critic updates per batch, a gradient penalty (double
    # backward), BatchNorm statistics, seeded noise: all of it compiled, or
    # on PyTorch traced and run without compiling ("auto" for a `fit` of
    # `TRACE_FIT` steps or more; elsewhere "auto" is Keras's own step). The
    # compiled and traced steps draw the eager step's noise.
    import zoo.core

    monkeypatch.setattr(zoo.core, "TRACE_FIT", 1)
    kwargs = dict(critic_steps=2, penalty=1.0, batch_norm=True)
    weights = TinyGAN(seed=0, **kwargs).get_weights()
    eager, eager_logs = train(False, weights=weights, **kwargs)
    compiled, compiled_logs = train(
        True if step == "compiled" else "auto", weights=weights, **kwargs
    )
    theirs = state_of(compiled)
    for key, (path, value) in state_of(eager).items():
        np.testing.assert_allclose(theirs[key][1], value, rtol=2e-4, atol=2e-5, err_msg=path)
    for key, value in eager_logs.items():
        np.testing.assert_allclose(compiled_logs[key], value, rtol=2e-4, err_msg=key)
    # The seed state advanced in the graph: 3 draws per step, 4 steps.
    assert compiled.seed_generator.state.numpy().tolist()[1] == 12


def test_compiled_step_draws_new_noise_every_step_and_is_seeded():
    def losses(seed):
        model = NoiseProbe(seed=seed)
        model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=True)
        seen = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: seen.append(float(logs["loss"]))
        )
        model.fit(toy_data(32), batch_size=8, epochs=1, verbose=0, callbacks=[record])
        return seen

    first, again, other = losses(3), losses(3), losses(4)
    assert len(set(first)) == 4, f"the same noise in two steps: {first}"
    assert first == again
    assert first != other


def test_the_noise_depends_on_the_seed_only_not_the_fit_length_or_the_step(monkeypatch):
    # For one seed, backend and setting, a training step draws the same
    # noise whatever the length of the `fit`, the fits before it, or the
    # step "auto" picks on PyTorch: eager for a `fit` planned below
    # `TRACE_FIT` steps, the traced step from there (and in later fits).
    # The thresholds are monkeypatched small; "auto" once also switched to
    # the TorchInductor step, with its own generator, from `LONG_FIT` steps
    # (set here too, so that this test fails wherever it still does).
    # `jit_compile=True` draws the same numbers on PyTorch and JAX (XLA's
    # stateless random ops on TensorFlow draw others).
    import zoo.core

    monkeypatch.setattr(zoo.core, "TRACE_FIT", 4)
    monkeypatch.setattr(zoo.core, "LONG_FIT", 8, raising=False)

    def probe(**settings):
        model = NoiseProbe(seed=3)
        model.compile(optimizer=keras.optimizers.SGD(0.0), **settings)
        return model

    def losses(model, steps):
        seen = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: seen.append(float(logs["loss"]))
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no eager fallback
            model.fit(toy_data(8 * steps), batch_size=8, shuffle=False, verbose=0,
                      callbacks=[record])
        return np.array(seen)  # (running means of the noise within the fit)

    eager, auto = probe(run_eagerly=True), probe()
    # Below, at and past both thresholds, then shorter fits again.
    for steps in (3, 8, 7, 4, 1):
        np.testing.assert_array_equal(losses(auto, steps), losses(eager, steps),
                                      err_msg=f"a fit of {steps} steps")
    # Fresh models: a fit one step shorter draws the same first steps.
    np.testing.assert_array_equal(losses(probe(), 8)[:7], losses(probe(), 7))
    np.testing.assert_array_equal(losses(probe(), 4)[:3], losses(probe(), 3))
    if BACKEND == "torch":
        assert auto.train_function.tier == 1  # (the traced step ran)
    if BACKEND != "tensorflow":
        np.testing.assert_allclose(losses(probe(jit_compile=True), 4),
                                   losses(probe(run_eagerly=True), 4), rtol=1e-6)


class Draws(GenerativeModel):
    """Logs one statistic of each of `keras.random`'s draws, every step;
    the loss takes a seeded dropout's gradient."""

    data_shape = (2,)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.w = self.add_weight(shape=(2,), initializer="ones", name="w")

    def log_names(self):
        return ("loss", "normal", "uniform", "scalar", "randint", "truncated", "categorical",
                "gamma", "binomial", "beta", "int_seed", "partial_noise")

    def train_step_logic(self, x, y=None, sample_weight=None):
        seed, r = self.seed_generator, keras.random
        logs = {
            "normal": ops.sum(r.normal((3, 2), mean=1.0, stddev=2.0, seed=seed)),
            "uniform": ops.sum(r.uniform((5,), minval=-1.0, maxval=3.0, seed=seed)),
            "scalar": r.uniform((), seed=seed),
            "randint": ops.sum(r.randint((7,), 2, 9, seed=seed)),
            "truncated": ops.sum(r.truncated_normal((4, 3), stddev=0.5, seed=seed)),
            "categorical": ops.sum(r.categorical(ops.log(x[:, :1] ** 2 + ops.ones((8, 3))), 5,
                                                 seed=seed)),
            "gamma": ops.sum(r.gamma((4,), alpha=2.0, seed=seed)),
            "binomial": ops.sum(r.binomial((4,), counts=5.0, probabilities=0.3, seed=seed)),
            "beta": ops.sum(r.beta((4,), alpha=2.0, beta=3.0, seed=seed)),
            "int_seed": ops.sum(r.normal((2,), seed=7)),
            "partial_noise": ops.sum(r.dropout(ops.ones((4, 3)), 0.5, noise_shape=(4, 1),
                                               seed=seed)),
        }
        logs["loss"] = self.minimize(
            "model", lambda: ops.sum(r.dropout(x * self.w, 0.5, seed=seed) ** 2))
        return logs


@pytest.mark.skipif(BACKEND != "torch", reason="the traced step is PyTorch's")
@pytest.mark.parametrize("step", ["traced", pytest.param("compiled", marks=pytest.mark.slow)])
def test_the_graph_steps_draw_what_the_eager_step_draws(step, monkeypatch):
    # Each of Keras's PyTorch random functions, run inside the traced graph
    # (and the Inductor-compiled one) as one operation with the seed drawn
    # in the graph: the eager step's numbers, every step, and the dropout's
    # gradient.
    import zoo.core

    monkeypatch.setattr(zoo.core, "TRACE_FIT", 1)
    runs = []
    for eager in (True, False):
        model = Draws(seed=5)
        settings = {"run_eagerly": True} if eager else {
            "jit_compile": True if step == "compiled" else "auto"}
        model.compile(optimizer=keras.optimizers.SGD(0.1), **settings)
        seen = []
        record = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda batch, logs: seen.append(
                {k: float(v) for k, v in logs.items()})
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no eager fallback
            model.fit(toy_data(24), batch_size=8, shuffle=False, verbose=0, callbacks=[record])
        runs.append((seen, model.w.numpy()))
    (eager, eager_w), (traced, traced_w) = runs
    if step == "traced":
        assert model.train_function.tier == 1
    else:
        assert model.train_function.fallback is None and model.train_function.cache
    assert eager[0]["normal"] != eager[1]["normal"]  # new draws every step
    for step, logs in zip(eager, traced):
        for key, value in logs.items():
            np.testing.assert_allclose(step[key], value, rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(traced_w, eager_w, rtol=1e-6)
    assert not np.allclose(eager_w, 1.0)


class Relay(GenerativeModel):
    """Each step, `last` takes the old value of `count`, which goes up by
    one: a new value that is another variable's old one (created after it,
    so copied back after it)."""

    data_shape = (2,)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.count = self.add_weight(shape=(3,), initializer="zeros", trainable=False)
        self.last = self.add_weight(shape=(3,), initializer="ones", trainable=False)
        self.w = self.add_weight(shape=(), initializer="zeros", name="w")

    def train_step_logic(self, x, y=None, sample_weight=None):
        self.last.assign(self.count)
        self.count.assign(self.count + 1.0)
        return {"loss": self.minimize("model", lambda: 0.0 * self.w)}


@pytest.mark.parametrize("jit_compile", [True, "auto"])
def test_a_variable_can_take_another_variables_old_value(jit_compile, monkeypatch):
    import zoo.core

    monkeypatch.setattr(zoo.core, "TRACE_FIT", 1)  # "auto": the traced step
    model = Relay()
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit_compile)
    model.fit(toy_data(24), batch_size=8, verbose=0)
    np.testing.assert_array_equal(model.count.numpy(), [3.0] * 3)
    np.testing.assert_array_equal(model.last.numpy(), [2.0] * 3)


def test_compiled_step_keeps_optimizer_state_trackers_and_iterations():
    model = Counter()
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    history = model.fit(toy_data(32), batch_size=8, epochs=2, verbose=0)
    # The loss is the update count: means 1.5 and 5.5 (trackers reset).
    assert history.history["loss"] == [1.5, 5.5]
    assert int(model.optimizer.iterations.numpy()) == 8


@torch_slow
def test_compiled_training_saves_loads_and_resumes(tmp_path):
    model, _ = train(True)
    path = tmp_path / "gan.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    theirs = state_of(loaded, metrics=False)
    for key, (path, value) in state_of(model, metrics=False).items():
        np.testing.assert_array_equal(theirs[key][1], value, err_msg=path)
    # Both go on with the same next steps (compiled again after loading).
    x = toy_data(32, seed=1)
    a = model.fit(x, batch_size=16, shuffle=False, verbose=0).history["loss"]
    b = loaded.fit(x, batch_size=16, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(a, b, rtol=1e-5)


@torch_slow
def test_compiled_step_works_with_callbacks_that_read_and_write_weights():
    model = TinyGAN(seed=0)
    model.compile(jit_compile=True)
    ema = EMA(decay=0.5)
    model.fit(toy_data(64), batch_size=16, epochs=2, verbose=0, callbacks=[ema])
    # After fit the average is in the model and differs from training weights.
    averaged = [np.array(v.numpy()) for v in model.trainable_variables]
    training = [np.array(keras.ops.convert_to_numpy(v)) for v in ema._training]
    assert any(not np.allclose(a, t) for a, t in zip(averaged, training))
    assert all(np.isfinite(a).all() for a in averaged)
    # Written weights are what the next compiled step starts from.
    model.fit(toy_data(16), batch_size=16, epochs=1, verbose=0)
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)


@torch_slow
def test_compiled_step_reports_gradient_norms():
    model = TinyGAN(seed=0)
    model.compile(jit_compile=True)
    model.record_gradient_norms(True)
    logs = model.fit(toy_data(32), batch_size=16, verbose=0).history
    assert logs["grad_norm/generator"][0] > 0
    assert logs["grad_norm/discriminator"][0] > 0


def test_compiled_step_rejects_wrong_data_clearly_and_keeps_compiling():
    model = Counter()
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    with pytest.raises(ValueError, match="expects data of shape"):
        model.fit(np.zeros((8, 3), "float32"), batch_size=8, verbose=0)
    if BACKEND == "jax":
        return  # Keras's JAX `fit` loses the weights it purged when a step raises
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # still compiled, no fallback
        history = model.fit(toy_data(16), batch_size=8, verbose=0)
    assert history.history["loss"] == [0.5]
    if BACKEND == "torch":
        assert model.train_function.fallback is None


def _family(name):
    rng = np.random.default_rng(0)
    x2 = rng.normal(size=(64, 2)).astype("float32")
    if name == "gan":
        from zoo.gan import GAN

        return GAN((2,), 4, hidden_units=(16,), seed=1), x2
    if name == "vae":
        from zoo.vae import VAE

        return VAE((4,), 2, hidden_units=(8,), seed=0), x2[:, [0, 1, 0, 1]]
    if name == "flow":
        from zoo.flow import RealNVP

        return RealNVP((2,), num_couplings=2, hidden_units=(8,), seed=0), x2
    if name == "ddpm":
        from zoo.diffusion import DDPM

        return DDPM((2,), timesteps=100, hidden_units=8, num_blocks=1, seed=0), x2
    from zoo.transformer import GPT

    model = GPT(vocab_size=16, max_length=16, num_layers=1, num_heads=2, hidden_dim=16,
                dropout=0.1, seed=0)
    return model, rng.integers(0, 16, (64, 9)).astype("int32")


def _every_model(name):
    """A tiny model of each class, its data (x, or (x, y)) and `fit`'s batch size."""
    from zoo.data import digits
    from zoo.diffusion import DDPM
    from zoo.flow import Glow, NeuralSplineFlow, RealNVP
    from zoo.gan import GAN, WGANGP, ConditionalGAN
    from zoo.transformer import GPT
    from zoo.vae import VAE, VQVAE, ConditionalVAE

    images, labels = digits("train")
    images, labels = images[:48], labels[:48]
    x2 = np.random.default_rng(0).normal(size=(48, 2)).astype("float32")
    vectors = images.reshape(-1, 64)
    models = {
        "gan": lambda: (GAN((2,), 4, hidden_units=(16,), seed=1), x2),
        "wgan_gp": lambda: (WGANGP((8, 8, 1), 4, critic_steps=2, filters=4, seed=1), images),
        "conditional_gan": lambda: (ConditionalGAN((2,), 3, 4, hidden_units=(16,), seed=1),
                                    (x2, labels % 3)),
        "vae": lambda: (VAE((64,), 2, hidden_units=(16,), seed=0), vectors),
        "conditional_vae": lambda: (
            ConditionalVAE((64,), 10, 2, num_levels=17, hidden_units=(16,), seed=3),
            (vectors, labels)),
        "vqvae": lambda: (VQVAE((8, 8, 1), 8, 4, num_levels=17, ema_decay=0.9, filters=4,
                                hidden_units=(16,), seed=4), images),
        "realnvp": lambda: (RealNVP((2,), num_couplings=2, hidden_units=(8,), seed=0), x2),
        "glow": lambda: (Glow((8, 8, 1), num_levels=17, num_scales=2, steps_per_scale=1,
                              filters=4, seed=0), images),
        "spline_flow": lambda: (NeuralSplineFlow((2,), num_couplings=2, num_bins=4,
                                                 hidden_units=(8,), seed=0), x2),
        "ddpm": lambda: (DDPM((2,), timesteps=100, hidden_units=8, num_blocks=1, seed=0), x2),
        "gpt": lambda: (
            GPT(vocab_size=16, max_length=16, num_layers=1, num_heads=2, hidden_dim=16,
                dropout=0.1, seed=0),
            np.random.default_rng(0).integers(0, 16, (48, 9)).astype("int32")),
    }
    return models[name]()


@pytest.mark.skipif(BACKEND != "torch", reason="the traced step is PyTorch's")
@pytest.mark.parametrize("name", [
    "gan", "wgan_gp", "conditional_gan", "vae", "conditional_vae", "vqvae", "realnvp",
    "glow", "spline_flow", "ddpm", "gpt",
])
def test_every_model_runs_the_traced_step_as_its_eager_step(name, monkeypatch):
    # "auto"'s traced step (the graph cleaned up, updating the variables in
    # place, each operation called through its Python binding, Keras's own
    # draws as single operations) against `run_eagerly=True`: three steps
    # from the same weights, for every model class, so every operation the
    # zoo's layers and losses use goes through the graph's rewrites, and
    # the noise is the eager step's. (JAX's and
    # TensorFlow's compiled steps are compared with their eager ones by
    # `test_compiled_step_equals_the_eager_step`.)
    import zoo.core

    monkeypatch.setattr(zoo.core, "TRACE_FIT", 1)
    runs, weights = [], None
    for eager in (True, False):
        model, data = _every_model(name)
        x, y = data if isinstance(data, tuple) else (data, None)
        if weights is None:
            weights = model.get_weights()
        else:  # some initializers are unseeded
            model.set_weights(weights)
        model.compile(run_eagerly=eager)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # no eager fallback
            history = model.fit(x, y, batch_size=16, shuffle=False, verbose=0)
        runs.append((model, history.history))
    (eager, eager_logs), (default, logs) = runs
    assert default.train_function.tier == 1  # traced
    # Bit for bit, but for WGAN-GP, whose double backward rounds one
    # float32 operation differently (1.5e-8 after 3 steps).
    rtol, atol = (2e-6, 1e-7) if name == "wgan_gp" else (0, 0)
    theirs = state_of(default)
    for key, (path, value) in state_of(eager).items():
        np.testing.assert_allclose(theirs[key][1], value, rtol=rtol, atol=atol, err_msg=path)
    for key, value in eager_logs.items():
        np.testing.assert_allclose(logs[key], value, rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.skipif(BACKEND != "torch", reason="the traced graph is PyTorch's")
def test_the_lean_graph_calls_equivalent_bindings_for_unbound_operations():
    # `_unsafe_view`, `slice` and `_to_copy` have no Python binding of
    # their own: the lean graph calls `view`, `narrow` and `to(copy=True)`,
    # with the same values and aliasing (a write to the copy leaves the
    # input alone; a write to the slice shows in its base).
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    from zoo.core.torch_graph import lean_graph

    aten = torch.ops.aten

    def fn(x):
        flat = aten._unsafe_view(x.mm(x.t()), [16])
        tail = aten.slice(flat, 0, -5, 2**63 - 1)
        middle = aten.slice(x, 1, 1, 3).clone()
        copy = aten._to_copy(x)
        copy.add_(1.0)
        wide = aten._to_copy(x, dtype=torch.float64)
        buffer = torch.zeros(4, 4)
        aten.slice(buffer, 0, 1).fill_(2.0)
        return tail, middle, copy, wide, buffer, x

    x = torch.arange(16.0).reshape(4, 4)
    graph = lean_graph(make_fx(fn, tracing_mode="fake")(x), 0, [])
    targets = {node.target for node in graph.graph.nodes}
    assert not targets & {aten._unsafe_view.default, aten.slice.Tensor, aten._to_copy.default}
    for got, expected in zip(graph(x.clone()), fn(x.clone())):
        assert got.dtype == expected.dtype
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.skipif(BACKEND != "torch", reason="the traced graph is PyTorch's")
def test_the_lean_graph_writes_into_temporaries_nothing_else_reads():
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    from zoo.core.torch_graph import lean_graph

    def fn(x, ys):
        once = torch.sqrt(x * 2.0) + 1.0  # both temporaries: written into
        twice = x * 3.0
        kept = twice + 1.0, twice  # read twice: a new tensor
        wide = x[:1] * 1.0 + x  # broadcast: the result is larger
        moments = torch._foreach_add(torch._foreach_sqrt(ys), 1e-7)
        return once, kept, wide, moments, torch._foreach_div(torch._foreach_mul(ys, 2.0), ys)

    x, ys = torch.rand(4, 3), [torch.rand(5), torch.rand(2, 2)]
    graph = lean_graph(make_fx(fn, tracing_mode="fake")(x, ys), 0, [])
    names = [getattr(node.target, "__name__", node.target) for node in graph.graph.nodes]
    assert names.count("sqrt_") == 1 and names.count("add_") == 1
    assert names.count("mul") == 3 and names.count("add") == 2  # (`kept`, `wide`)
    assert names.count("_foreach_add_") == 1 and names.count("_foreach_div_") == 1
    torch.testing.assert_close(graph(x.clone(), [y.clone() for y in ys]), fn(x, ys),
                               rtol=0, atol=0)


@pytest.mark.skipif(BACKEND != "torch", reason="the traced graph is PyTorch's")
def test_the_lean_graph_writes_into_a_new_tensor_at_its_last_reader():
    # Keras's Adam reads the gradients last in `_foreach_mul(grads, grads)`:
    # that writes into them (a bias's gradient is a view of a sum).
    import torch
    from torch.fx.experimental.proxy_tensor import make_fx

    from zoo.core.torch_graph import lean_graph

    def fn(x, ms, ys):
        grads = [y * 2.0 for y in ys] + [(x * 2.0).sum(0).view(3, 1)]
        norms = torch._foreach_norm(grads)
        moments = torch._foreach_add(ms, grads)  # (inputs: never written)
        squares = torch._foreach_mul(grads, grads)
        early = x * 5.0
        late = early + 1.0  # `early` read again below: a new tensor
        again = early * 2.0  # the last reader: in place
        seen = x * 7.0
        view = seen.view(-1)  # a view of it outlives the reader
        return norms, moments, squares, late, again, seen * 2.0, view

    x, ms, ys = torch.rand(4, 3), [torch.rand(5), torch.rand(3, 1)], [torch.rand(5)]
    graph = lean_graph(make_fx(fn, tracing_mode="fake")(x, ms, ys), 0, [])
    names = [getattr(node.target, "__name__", node.target) for node in graph.graph.nodes]
    assert names.count("_foreach_mul_") == 1 and names.count("_foreach_mul") == 0
    assert names.count("_foreach_add") == 1
    assert names.count("add") == 1 and names.count("mul_") == 1
    assert names.count("mul") == 5  # y, x and seen by 2; x by 5 and 7
    torch.testing.assert_close(graph(x, ms, ys), fn(x, ms, ys), rtol=0, atol=0)


@pytest.mark.skipif(BACKEND != "torch", reason="the traced graph is PyTorch's")
def test_the_traced_step_updates_weights_and_moments_in_place(monkeypatch):
    # The graph updates every weight and optimizer slot in its own
    # storage, with nothing copied back after the step.
    import torch

    import zoo.core

    monkeypatch.setattr(zoo.core, "TRACE_FIT", 1)  # "auto": the traced step
    model = TinyGAN(seed=0, batch_norm=True)
    model.compile()
    model.fit(toy_data(32), batch_size=16, shuffle=False, verbose=0)
    step = model.train_function.traced
    (entry,) = step.cache.values()
    _, changed, copied, _ = entry
    copied = {id(step.variables[changed[i]]) for i in copied}
    updated = list(model.trainable_variables) + [
        v for v in model.optimizer.variables if len(v.shape)
    ]
    assert len(updated) >= 20
    assert not [v.path for v in updated if id(v) in copied]
    # Each update runs behind a Python branch on its gradients being
    # finite: no copies of the old state, no selects left.
    from zoo.core.torch_graph import _run_if

    graph = entry[0].__self__.graph
    assert sum(node.target is _run_if for node in graph.nodes) == 2  # (two players)
    assert not [node for node in graph.nodes
                if node.target is torch.where and "out" in node.kwargs]


@pytest.mark.slow
@pytest.mark.parametrize("family", ["gan", "vae", "flow", "ddpm", "gpt"])
def test_each_family_trains_with_the_compiled_step(family):
    model, x = _family(family)
    model.compile(jit_compile=True)
    before = [np.array(v.numpy()) for v in model.trainable_variables]
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # no eager fallback
        history = model.fit(x, batch_size=32, epochs=3, verbose=0)
        logs = model.evaluate(x, batch_size=32, verbose=0, return_dict=True)
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)) and np.isfinite(logs["loss"])
    after = [np.array(v.numpy()) for v in model.trainable_variables]
    assert all(np.isfinite(a).all() for a in after)
    assert sum(not np.array_equal(a, b) for a, b in zip(before, after)) > len(after) // 2


@pytest.mark.skipif(BACKEND != "torch", reason="the eager fallback is PyTorch's")
def test_untraceable_step_falls_back_to_eager_with_a_warning(monkeypatch):
    import zoo.core

    class Unseeded(NoiseProbe):
        def train_step_logic(self, x, y=None, sample_weight=None):
            def loss_fn():  # a draw from Keras's global generator
                return keras.random.normal(()) + 0.0 * self.w

            return {"loss": self.minimize("model", loss_fn)}

    model = Unseeded()
    model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=True)
    with pytest.warns(UserWarning, match="to compile it as a graph.*runs eagerly"):
        history = model.fit(toy_data(32), batch_size=8, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    # "auto" falls back the same way from the traced step, once: a later
    # `fit` does not try again.
    monkeypatch.setattr(zoo.core, "TRACE_FIT", 2)
    model = Unseeded()
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    with pytest.warns(UserWarning, match="to run it as a graph.*runs eagerly"):
        model.fit(toy_data(16), batch_size=8, verbose=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        history = model.fit(toy_data(64), batch_size=8, verbose=0)
    assert len(history.history["loss"]) == 1 and np.isfinite(history.history["loss"][0])


# ---------------------------------------------------------------------------
# Non-finite updates (zoo.core.nonfinite): skipped, counted, stopped.


def _nan_row_data():
    x = toy_data(64)
    x[20] = np.nan  # in the second of four batches of 16
    return x


def _skip_settings():
    if BACKEND == "jax":  # (JAX's steps are compiled; uncompiled is a debug mode)
        return [("compiled", True)]
    if BACKEND == "torch":  # eager, traced ("auto"), TorchInductor's
        return [("eager", False), ("traced", "auto"), ("compiled", True)]
    return [("eager", False), ("compiled", True)]


@pytest.mark.parametrize("kind, jit_compile", _skip_settings())
def test_a_non_finite_update_is_skipped_and_counted(kind, jit_compile, monkeypatch):
    import zoo.core

    monkeypatch.setattr(zoo.core, "TRACE_FIT", 1)  # PyTorch's "auto": traced
    model = TinyGAN(penalty=1.0, batch_norm=True, seed=0)
    model.compile(jit_compile=jit_compile)
    x = _nan_row_data()
    # One step on the clean first batch, then the bad batch alone: nothing
    # of the discriminator may change (weights, moments, step counter,
    # BatchNorm statistics); the generator still trains.
    model.fit(x[:16], batch_size=16, epochs=1, shuffle=False, verbose=0)
    before = state_of(model, metrics=False)
    generator = [v.numpy().copy() for v in model.generator.trainable_variables]
    history = model.fit(x[16:32], batch_size=16, epochs=1, shuffle=False, verbose=0)
    assert history.history["skipped_updates"] == [1.0]
    after = state_of(model, metrics=False)
    # The discriminator's weights and optimizer state (its optimizer is
    # named after the player). Its BatchNorm statistics move with the
    # generator's update, which reads the fakes; the bad batch's NaN stays
    # out of them (checked finite below).
    checked = [k for k, (path, _) in before.items()
               if path.startswith("discriminator") and "moving_" not in path]
    assert len(checked) >= 10
    for k in checked:
        np.testing.assert_array_equal(before[k][1], after[k][1], err_msg=before[k][0])
    assert not any(
        np.array_equal(a, v.numpy()) for a, v in zip(generator, model.generator.trainable_variables)
    )
    assert all(np.isfinite(v).all() for _, v in after.values() if v.dtype.kind == "f")
    # Clean data again: nothing skipped, and the count restarts each epoch.
    history = model.fit(x[:16], batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert history.history["skipped_updates"] == [0.0, 0.0]


def test_fit_stops_after_consecutive_skips_and_ema_holds():
    from zoo.core.nonfinite import NonFiniteUpdateError

    model = TinyGAN(seed=0)
    model.compile()
    ema = EMA(decay=0.5)
    model.fit(toy_data(32), batch_size=16, epochs=1, verbose=0, callbacks=[ema])
    average = [np.array(a) for a in ema.averaged_weights]
    model.max_consecutive_skips = 3
    bad = np.full((96, 2), np.nan, "float32")
    with pytest.raises(NonFiniteUpdateError, match="3 consecutive training steps"):
        model.fit(bad, batch_size=16, epochs=2, verbose=0, callbacks=[ema])
    for a, b in zip(average, ema.averaged_weights):
        np.testing.assert_array_equal(a, np.array(b))
    model.max_consecutive_skips = None  # never stops
    history = model.fit(bad, batch_size=16, epochs=1, verbose=0)
    assert history.history["skipped_updates"] == [6.0]
