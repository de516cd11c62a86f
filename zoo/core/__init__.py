"""The seam: the only package of keras-genzoo that asks which backend runs.

`GenerativeModel` holds the backend-agnostic training step; the modules
`tensorflow`, `jax` and `torch` here compute gradients and apply updates
the way each backend needs, and `backend_module()` picks the one in use.
"""

import importlib

import keras

SUPPORTED_BACKENDS = ("tensorflow", "jax", "torch")


def backend_name():
    """The Keras backend in use: "tensorflow", "jax" or "torch"."""
    return keras.backend.backend()


def backend_module():
    """The module of `zoo.core` that implements steps for this backend."""
    name = backend_name()
    if name not in SUPPORTED_BACKENDS:
        raise RuntimeError(
            f"keras-genzoo trains on {', '.join(SUPPORTED_BACKENDS)}; "
            f"KERAS_BACKEND is {name!r}."
        )
    return importlib.import_module(f"zoo.core.{name}")


from zoo.core.multi_optimizer import MultiOptimizer  # noqa: E402
from zoo.core.model import GenerativeModel  # noqa: E402

__all__ = ["GenerativeModel", "MultiOptimizer", "backend_module", "backend_name"]
