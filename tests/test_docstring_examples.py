"""Every example in the public API's docstrings runs, on the backend in use.

The examples are what the API reference (docs/api/) shows; this file runs
them as doctest does: each ```python block (and each docstring's `>>>`
lines, joined) as one script in a copy of the globals of the module that
defines the documented object (so an example may use the names its module
has), from an empty working directory, with no network. The suite runs once per backend
(tests/all_backends.py), so every example runs on TensorFlow, JAX and
PyTorch.

What is collected: the docstrings of the packages below, of every class and
function their `__all__` names, and of the public methods those classes
define or inherit from keras-genzoo classes. A class added to a package's
`__all__` is collected with nothing to change here. An example shared by
several classes (an inherited method's) runs once.

Also checked: every public class and function has a docstring, and every
model (a `zoo.core.GenerativeModel`) has a runnable ```python example.
"""

import doctest
import importlib
import inspect
import re
import socket

import keras
import pytest

PACKAGES = (
    "zoo",
    "zoo.core",
    "zoo.gan",
    "zoo.vae",
    "zoo.flow",
    "zoo.diffusion",
    "zoo.transformer",
    "zoo.multimodal",
    "zoo.layers",
    "zoo.data",
    "zoo.metrics",
    "zoo.presets",
    "callbacks",
)
PROJECT_ROOTS = ("zoo", "callbacks")
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def _project_class(cls):
    return cls.__module__.split(".")[0] in PROJECT_ROOTS


def _public_objects():
    """(qualified name, object) for every name in the packages' `__all__`."""
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            yield f"{package}.{name}", getattr(module, name)


def _docstrings():
    """(qualified name, docstring, name of the module whose globals the
    examples see) of the packages, their public objects and the public
    methods of their public classes (the project's own only: Keras's
    docstrings are Keras's to test)."""
    for package in PACKAGES:
        yield package, importlib.import_module(package).__doc__ or "", package
    for qualname, obj in _public_objects():
        if inspect.ismodule(obj) or not (inspect.isclass(obj) or callable(obj)):
            continue  # submodules have their own entry; constants have no docstring
        yield qualname, obj.__doc__ or "", obj.__module__
        if not inspect.isclass(obj):
            continue
        for cls in obj.__mro__:
            if not _project_class(cls):
                continue
            for name, member in vars(cls).items():
                if name.startswith("_"):
                    continue
                function = member.fget if isinstance(member, property) else getattr(
                    member, "__func__", member
                )
                doc = getattr(function, "__doc__", None)
                if doc and callable(function):
                    yield f"{qualname}.{name}", doc, cls.__module__


def _examples(doc):
    """The ```python blocks of `doc`, then its `>>>` lines as one more script."""
    doc = inspect.cleandoc(doc)
    scripts = [match.group(1) for match in FENCE.finditer(doc)]
    doctest_lines = doctest.DocTestParser().get_examples(doc)
    if doctest_lines:
        scripts.append("".join(example.source for example in doctest_lines))
    return scripts


def _collect():
    """[(name, module, source)], each source once, sorted by name."""
    by_source = {}
    for qualname, doc, module in _docstrings():
        for index, source in enumerate(_examples(doc)):
            name = f"{qualname}[{index}]" if index else qualname
            by_source.setdefault(source, (name, module))
    return sorted((name, module, source) for source, (name, module) in by_source.items())


EXAMPLES = _collect()


def test_examples_were_collected():
    # A broken collector would make every test below vanish, not fail.
    names = {name for name, _, _ in EXAMPLES}
    assert len(EXAMPLES) >= 20, names
    assert "zoo.gan.GAN" in names, sorted(names)


def test_every_public_class_and_function_has_a_docstring():
    missing = [
        qualname
        for qualname, obj in _public_objects()
        if (inspect.isclass(obj) or inspect.isfunction(obj))
        and not (obj.__dict__.get("__doc__") if inspect.isclass(obj) else obj.__doc__)
    ]
    assert not missing, f"public objects without a docstring of their own: {missing}"


def test_every_model_has_a_runnable_example():
    from zoo.core import GenerativeModel

    models = [
        (qualname, obj)
        for qualname, obj in _public_objects()
        if inspect.isclass(obj) and issubclass(obj, GenerativeModel)
    ]
    # Base classes (`GenerativeModel`, `DiffusionModel`, ...) describe a
    # protocol; the models that subclass them carry the examples.
    bases = {base for _, obj in models for base in obj.__mro__[1:]}
    missing = [
        qualname
        for qualname, obj in models
        if obj not in bases
        and not FENCE.search(inspect.cleandoc(obj.__dict__.get("__doc__") or ""))
    ]
    assert not missing, f"models without a ```python example in their docstring: {missing}"


@pytest.fixture
def offline(monkeypatch):
    """Refuse connections to anything but this machine: an example that
    downloads would make the suite depend on the network."""
    connect = socket.socket.connect

    def local_only(self, address):
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"docstring examples must not use the network (tried {address!r})")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.parametrize(
    "name,module,source", EXAMPLES, ids=[name for name, _, _ in EXAMPLES]
)
def test_docstring_example_runs(name, module, source, tmp_path, monkeypatch, offline):
    monkeypatch.chdir(tmp_path)  # files an example writes land in a temporary folder
    namespace = dict(vars(importlib.import_module(module)))
    namespace["__name__"] = "__docstring_example__"  # an `if __name__ == "__main__"` stays off
    policy = keras.config.dtype_policy()
    try:
        exec(compile(source, f"<docstring of {name}>", "exec"), namespace)
    finally:
        keras.config.set_dtype_policy(policy)  # an example may set mixed precision
        keras.backend.clear_session()
