"""Keras callbacks for generative training.

- `SampleGrid`: a PNG (and TensorBoard image) of seeded samples every N epochs.
- `EMA`: moving average of the weights, swapped in for evaluation, sampling
  and saving; saved with checkpoints so `BackupAndRestore` resumes exactly.
- `GradientMonitor`: per-player and per-layer gradient norms in the logs,
  warnings when they vanish or explode.
- `Evaluate`: a metric (FID, ...) in the logs, for `ModelCheckpoint` and
  `EarlyStopping`.
- `LatentInterpolation`: PNG of decoded paths between fixed latent points.

They talk to zoo models only through the model protocol (`sample`,
`decode`/`generate`, and the hooks of `zoo.core.GenerativeModel`), never to a
family's internals or the backend.
"""

from callbacks.ema import EMA
from callbacks.evaluate import Evaluate
from callbacks.gradient_monitor import GradientMonitor
from callbacks.latent_interpolation import LatentInterpolation
from callbacks.sample_grid import SampleGrid

__all__ = ["EMA", "Evaluate", "GradientMonitor", "LatentInterpolation", "SampleGrid"]
