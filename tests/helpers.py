"""The shared checks every zoo model passes, under every backend.

Family tests call `check_model(...)` once per model class, then add their
own checks. It verifies the model protocol of DESIGN.md: a config round trip,
a `.keras` round trip that restores weights, optimizer state and outputs, a
few `fit` steps with finite losses, `sample` shapes and dtype, and seeded
determinism of `sample`.
"""

import os

import keras
import numpy as np


def assert_trees_close(a, b, atol=0.0, rtol=0.0, what="values"):
    a, b = keras.tree.flatten(a), keras.tree.flatten(b)
    assert len(a) == len(b), f"{what}: {len(a)} arrays vs {len(b)}"
    for i, (x, y) in enumerate(zip(a, b)):
        np.testing.assert_allclose(
            np.asarray(x), np.asarray(y), atol=atol, rtol=rtol,
            err_msg=f"{what}: array {i} differs",
        )


def counted_calls(monkeypatch, layer):
    """A list that grows by one at every Keras call of `layer`."""
    calls, call = [], layer.call
    monkeypatch.setattr(layer, "call", lambda *a, **k: calls.append(1) or call(*a, **k))
    return calls


def check_model(
    make_model,
    data,
    tmp_path,
    *,
    sample_shape,
    num_samples=4,
    epochs=2,
    batch_size=16,
    sample_kwargs=None,
    loss_should_fall=False,
    compile_kwargs=None,
):
    """Runs the protocol checks on a fresh model from `make_model()`.

    Args:
        make_model: callable returning a new, uncompiled model.
        data: what `fit` takes as `x`, or a tuple `(x, y)`.
        tmp_path: a directory for the saved file.
        sample_shape: the shape of one sample, e.g. `(8, 8, 1)`.
        sample_kwargs: extra arguments for `sample` (labels, steps, ...).
        loss_should_fall: also require the last epoch's loss below the
            first's (for likelihood models; adversarial losses need not fall).
    Returns the trained model.
    """
    sample_kwargs = dict(sample_kwargs or {})
    compile_kwargs = dict(compile_kwargs or {})
    x, y = data if isinstance(data, tuple) else (data, None)

    # Config round trip: same class, same config, same variable shapes.
    model = make_model()
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config
    assert [tuple(v.shape) for v in clone.weights] == [
        tuple(v.shape) for v in model.weights
    ]

    # A few fit steps with finite loss.
    model.compile(**compile_kwargs)
    history = model.fit(
        x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=False
    )
    assert "loss" in history.history
    for name, values in history.history.items():
        assert np.all(np.isfinite(values)), f"{name} is not finite: {values}"
    if loss_should_fall:
        losses = history.history["loss"]
        assert losses[-1] < losses[0], f"loss did not fall: {losses}"

    # Sample shapes, dtype and seeded determinism.
    samples = model.sample(num_samples, seed=3, **sample_kwargs)
    assert isinstance(samples, np.ndarray), type(samples)
    assert samples.shape == (num_samples, *sample_shape), samples.shape
    assert samples.dtype == np.float32, samples.dtype
    assert np.all(np.isfinite(samples))
    again = model.sample(num_samples, seed=3, **sample_kwargs)
    np.testing.assert_array_equal(samples, again)
    other = model.sample(num_samples, seed=4, **sample_kwargs)
    assert not np.array_equal(samples, other), "different seeds, same samples"

    # .keras round trip: weights, optimizer state and outputs.
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    assert loaded.get_config() == model.get_config()
    assert_trees_close(
        [v.numpy() for v in loaded.weights],
        [v.numpy() for v in model.weights],
        what="weights after load",
    )
    assert_trees_close(
        [v.numpy() for v in loaded.optimizer.variables],
        [v.numpy() for v in model.optimizer.variables],
        what="optimizer state after load",
    )
    np.testing.assert_allclose(
        loaded.sample(num_samples, seed=3, **sample_kwargs), samples,
        rtol=1e-5, atol=1e-6,
    )
    return model
