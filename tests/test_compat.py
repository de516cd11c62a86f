"""`zoo.core.compat`: every private Keras, PyTorch and TensorFlow name the
core uses is present in the installed releases, and a missing one fails
loudly, naming it. CI also runs this file on the oldest versions
`pyproject.toml` allows (`.ci/run`, docs/testing.md)."""

import pathlib
import re

import keras
import pytest

from zoo.core import compat

BACKEND = keras.backend.backend()
CORE = pathlib.Path(compat.__file__).parent


def test_every_private_name_the_core_uses_is_present():
    assert compat.missing() == []


def test_a_moved_name_fails_loudly_naming_it(monkeypatch):
    module = pytest.importorskip("keras.src.random.seed_generator")
    monkeypatch.setattr(compat, "_cache", {})
    monkeypatch.delattr(module, "draw_seed")
    with pytest.raises(compat.CompatError,
                       match=r"`keras\.src\.random\.seed_generator\.draw_seed` \(drawing"):
        compat.private("keras.draw_seed")
    (problem,) = compat.missing()
    assert "keras.src.random.seed_generator.draw_seed" in problem and keras.__version__ in problem


def test_a_moved_module_or_attribute_fails_loudly_naming_it(monkeypatch):
    monkeypatch.setattr(compat, "_cache", {})
    monkeypatch.setitem(compat.NAMES, "keras.gone", (None, "keras.src.no_such_module", None, "x"))
    with pytest.raises(compat.CompatError, match=r"`keras\.src\.no_such_module` \(x\)"):
        compat.private("keras.gone")
    monkeypatch.delitem(compat.NAMES, "keras.gone")
    monkeypatch.delattr(keras.layers.Layer, "_flatten_layers")
    (problem,) = compat.missing()
    assert "`keras.Model._flatten_layers`" in problem
    with pytest.raises(KeyError, match="no entry 'typo'"):
        compat.private("typo")


def test_patched_replaces_a_private_function_where_callers_look_and_restores_it():
    import keras.src.random.seed_generator as module

    original = module.draw_seed
    calls = []

    def wrap(tag):
        def wrapper(draw):
            def draw_seed(seed):
                calls.append(tag)
                return draw(seed)
            return draw_seed
        return wrapper

    with compat.patched("keras.draw_seed", wrap("outer")):
        with compat.patched("keras.draw_seed", wrap("inner")):
            module.draw_seed(1)
        assert calls == ["inner", "outer"]
        module.draw_seed(1)  # the outer block's replacement is back
        assert calls == ["inner", "outer", "outer"]
        with pytest.raises(RuntimeError):
            with compat.patched("keras.draw_seed", wrap("failing")):
                raise RuntimeError
    assert module.draw_seed is original
    with pytest.raises(KeyError, match="no entry 'typo'"):
        with compat.patched("typo", wrap("x")):
            pass


@pytest.mark.skipif(BACKEND != "torch", reason="the traced step is PyTorch's")
def test_a_moved_torch_name_makes_the_traced_step_say_so_and_run_eagerly(monkeypatch):
    # The step falls back to eager (training goes on) with a warning that
    # names what is missing.
    import torch.fx.experimental.proxy_tensor as proxy_tensor

    import zoo.core
    import zoo.core.torch  # noqa: F401 -- imported before the name goes
    from tests.core_models import NoiseProbe, toy_data

    monkeypatch.setattr(compat, "_cache", {})
    monkeypatch.delattr(proxy_tensor, "make_fx")
    monkeypatch.setattr(zoo.core, "TRACE_FIT", 1)
    model = NoiseProbe(seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    with pytest.warns(UserWarning, match=r"torch\.fx\.experimental\.proxy_tensor\.make_fx"):
        history = model.fit(toy_data(16), batch_size=8, verbose=0)
    assert len(history.history["loss"]) == 1


def test_the_core_reaches_private_names_only_through_compat():
    # A `from keras.src... import x`, `torch._x` or `tf.__internal__` in
    # zoo/core outside compat.py fails here, and so does a `private(key)`
    # of a key the registry lacks (which `missing()` would never check).
    direct, unknown = [], []
    for file in sorted(CORE.glob("*.py")):
        if file.name == "compat.py":
            continue
        code = "\n".join(line for line in file.read_text().splitlines()
                         if not line.lstrip().startswith("#"))
        code = re.sub(r"`[^`\n]*`", "", code)  # names quoted in docstrings
        direct += [f"{file.name}: {m}" for m in re.findall(
            r"\bkeras\.src\b[\w.]*|(?<![\w.])torch\._[A-Za-z]\w*|\b__internal__\b", code)]
        unknown += [f"{file.name}: {key}" for key in re.findall(r"(?:private|patched)\(\"([^\"]+)\"", code)
                    if key not in compat.NAMES]
    assert not direct, f"private names used directly, not through zoo.core.compat: {direct}"
    assert not unknown, f"keys missing from zoo.core.compat.NAMES: {unknown}"
