"""keras-genzoo: generative models whose training step runs on every backend.

Each model is a `keras.Model` with its own training step, written once with
`keras.ops` and run by `zoo.core` on TensorFlow, JAX (jit-compiled) or
PyTorch, whichever `KERAS_BACKEND` selects. Train with plain `model.fit`.

Example:

```python
import zoo
images, labels = zoo.data.digits("train")
zoo.list_presets()                        # pretrained models shipped inside
model = zoo.from_preset("gan_ring")
```

`import zoo` imports every subpackage (`zoo.gan`, `zoo.vae`, `zoo.flow`,
`zoo.diffusion`, `zoo.transformer`, `zoo.layers`, ...), which registers
every zoo class with Keras: `keras.saving.load_model("model.keras")` then
loads any zoo model without further imports.

One case is left light on purpose: while `python -m zoo` itself imports this
package, before it runs `zoo/__main__.py`, nothing is imported, so that
`python -m zoo --help` answers without loading Keras and a backend. The
command line loads the rest (`load_all()`) once a command needs Keras; the
public names here load it too on first access.
"""

import importlib
import pkgutil
import sys
from typing import TYPE_CHECKING

__version__ = "0.1.0"

if TYPE_CHECKING:  # what `load_all()` binds, for IDEs, type checkers, the API reference
    from zoo import data
    from zoo.core import GenerativeModel, MultiOptimizer
    from zoo.presets import from_preset, list_presets

__all__ = [
    "GenerativeModel",
    "MultiOptimizer",
    "data",
    "from_preset",
    "list_presets",
    "load_all",
    "__version__",
]

# Public names and where they live; bound by `load_all()`.
_PUBLIC = {
    "GenerativeModel": "zoo.core",
    "MultiOptimizer": "zoo.core",
    "from_preset": "zoo.presets",
    "list_presets": "zoo.presets",
}


def load_all():
    """Imports every zoo subpackage, registering each zoo class with Keras.

    `import zoo` does this already, except while `python -m zoo` imports the
    package (see the module doc); calling it again costs nothing.

    ```python
    import zoo
    zoo.load_all()
    ```
    """
    for name, module in _PUBLIC.items():
        globals()[name] = getattr(importlib.import_module(module), name)
    # Every subpackage, so that a new family registers its classes without
    # being listed here; `__main__` is the command line, not a library part.
    for info in pkgutil.iter_modules(__path__, prefix=f"{__name__}."):
        if not info.name.endswith(".__main__"):
            importlib.import_module(info.name)


def _imported_by_python_m_zoo():
    """True while `python -m zoo` imports this package.

    runpy imports a module's package before running the module, and sets
    `sys.argv[0]` to the module's path only after that: until then it is
    "-m". `sys.orig_argv` (Python >= 3.10) says which module `-m` named, so
    a package that imports zoo under `python -m other` gets every class.
    """
    if sys.argv[:1] != ["-m"]:
        return False
    args = list(getattr(sys, "orig_argv", ()))[1:]
    i = 0
    while i < len(args) and args[i].startswith("-") and args[i] != "-":
        arg = args[i]
        if arg.startswith("--"):  # --check-hash-based-pycs MODE: the one long option with a value
            i += 2 if arg == "--check-hash-based-pycs" else 1
            continue
        for k, flag in enumerate(arg[1:], start=2):
            rest = arg[k:]
            if flag == "m":  # "-m zoo", "-mzoo", "-Bm zoo"
                named = rest or (args[i + 1] if i + 1 < len(args) else "")
                return named == __name__
            if flag == "c":
                return False
            if flag in "WX":  # their value is the rest or the next argument
                i += 0 if rest else 1
                break
        i += 1
    return False


def __getattr__(name):
    # Reached only when `load_all()` has not run (under `python -m zoo`).
    if name in _PUBLIC or name in {info.name for info in pkgutil.iter_modules(__path__)}:
        load_all()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if not _imported_by_python_m_zoo():
    load_all()
