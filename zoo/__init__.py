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
"""

__version__ = "0.1.0"

from zoo import data  # noqa: E402
from zoo.core import GenerativeModel, MultiOptimizer  # noqa: E402
from zoo.presets import from_preset, list_presets  # noqa: E402

__all__ = [
    "GenerativeModel",
    "MultiOptimizer",
    "data",
    "from_preset",
    "list_presets",
    "__version__",
]
