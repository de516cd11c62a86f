"""`LatentInterpolation`: pictures of paths between fixed latent points."""

import os

import keras
import numpy as np

from callbacks import _common
from zoo.core.tensorboard import TensorBoardImages


def interpolate(z0, z1, steps, method="slerp"):
    """`(rows, steps, dim)` points from `z0[i]` to `z1[i]`, both `(rows, dim)`.

    `"slerp"` follows the great circle (norms stay typical of a Gaussian
    latent); `"linear"` the straight line.
    """
    t = np.linspace(0.0, 1.0, steps)[None, :, None]
    z0, z1 = z0[:, None, :], z1[:, None, :]
    if method == "linear":
        return (1 - t) * z0 + t * z1
    unit0 = z0 / np.linalg.norm(z0, axis=-1, keepdims=True)
    unit1 = z1 / np.linalg.norm(z1, axis=-1, keepdims=True)
    omega = np.arccos(np.clip(np.sum(unit0 * unit1, axis=-1, keepdims=True), -1.0, 1.0))
    sin = np.sin(omega)
    safe = np.where(sin < 1e-6, 1.0, sin)
    slerp = (np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / safe
    return np.where(sin < 1e-6, (1 - t) * z0 + t * z1, slerp)


class LatentInterpolation(keras.callbacks.Callback):
    """PNG of decoded interpolations between fixed latent points, every few epochs.

    Draws `num_rows` pairs of latent points from N(0, I) with `seed` once,
    and every `every` epochs decodes `steps` points along the path between
    each pair: one row per pair in an image grid (`(h, w, 1|3)` data), or
    all paths in one scatter plot (2-D data). Works with models that have
    an integer `latent_dim` and `decode(z)` (the VAEs; `ConditionalVAE` and
    conditional GANs need `labels`) or `generate(z)` (the GANs, which use
    the generator being trained). Files are
    `directory/interpolation_epoch_0001.png`, ...; with `log_dir`, also
    TensorBoard images tagged `interpolation`. Runs after the last epoch
    too. `interpolate(z0, z1, steps, method)` in this module computes the
    paths.

    Args:
        directory: where the PNGs go.
        num_rows: number of interpolated pairs.
        steps: points per path, ends included (>= 2).
        every: draw after every `every`-th epoch.
        seed: integer seed of the latent end points.
        method: `"slerp"` (spherical) or `"linear"`.
        labels: for conditional models, a class label for all rows or one
            per row.
        log_dir: optional TensorBoard log directory.

    Example:

    ```python
    import tempfile
    from callbacks import LatentInterpolation
    from zoo.data import digits
    from zoo.vae import VAE

    model = VAE(data_shape=(8, 8, 1), latent_dim=4, num_levels=17,
                filters=4, hidden_units=(16,), seed=0)
    model.compile()
    out = tempfile.mkdtemp()
    model.fit(digits("train")[0][:128], batch_size=64, epochs=1, verbose=0,
              callbacks=[LatentInterpolation(out, num_rows=4, steps=6)])
    # out/interpolation_epoch_0001.png: 4 rows of 6 digits
    ```
    """

    # In a multi-process run (torchrun), rank 0 alone writes the images.
    chief_only = True

    def __init__(self, directory, num_rows=8, steps=8, every=1, seed=0,
                 method="slerp", labels=None, log_dir=None):
        super().__init__()
        self.directory = _common.check_directory(directory)
        self.num_rows = _common.check_positive_int(num_rows, "num_rows")
        self.steps = _common.check_positive_int(steps, "steps")
        if self.steps < 2:
            raise ValueError(f"`steps` must be at least 2 (the two ends); received steps={steps!r}.")
        self.every = _common.check_positive_int(every, "every")
        self.seed = _common.check_int(seed, "seed")
        if method not in ("slerp", "linear"):
            raise ValueError(f"`method` must be 'slerp' or 'linear'; received method={method!r}.")
        self.method = method
        if labels is not None:
            labels = np.asarray(labels)
            if labels.ndim == 0:
                labels = np.full((self.num_rows,), int(labels))
            if labels.shape != (self.num_rows,):
                raise ValueError(
                    f"`labels` must be one label or {self.num_rows} (one per row); "
                    f"received shape {labels.shape}."
                )
        self.labels = labels
        self._tensorboard = (
            None if log_dir is None
            else TensorBoardImages(
                _common.check_directory(log_dir, "log_dir"), "LatentInterpolation")
        )
        self.paths = []

    def latent_paths(self, latent_dim):
        """The fixed latent points, `(num_rows * steps, latent_dim)` float32."""
        rng = np.random.default_rng(self.seed)
        z0 = rng.standard_normal((self.num_rows, latent_dim))
        z1 = rng.standard_normal((self.num_rows, latent_dim))
        z = interpolate(z0, z1, self.steps, self.method)
        return z.reshape(-1, latent_dim).astype(np.float32)

    def decode(self, model):
        """The decoded paths, `(num_rows * steps, ...)` NumPy, row by row."""
        latent_dim = getattr(model, "latent_dim", None)
        has_decode, has_generate = hasattr(model, "decode"), hasattr(model, "generate")
        if not isinstance(latent_dim, (int, np.integer)) or not (has_decode or has_generate):
            raise ValueError(
                "LatentInterpolation needs a model with an integer `latent_dim` "
                f"and `decode(z)` or `generate(z)`; {type(model).__name__} has "
                f"latent_dim={latent_dim!r}, decode: {has_decode}, generate: {has_generate}."
            )
        z = self.latent_paths(int(latent_dim))
        extra = ()
        if self.labels is not None:
            extra = (np.repeat(self.labels, self.steps).astype("int32"),)
        if has_decode:
            return np.asarray(model.decode(z, *extra))
        if extra:
            extra = (keras.ops.convert_to_tensor(extra[0]),)
        out = model.generate(keras.ops.convert_to_tensor(z), *extra, training=False)
        return keras.ops.convert_to_numpy(out)

    def on_epoch_end(self, epoch, logs=None):
        if not _common.due(epoch, self.every, (self.params or {}).get("epochs")):
            return
        decoded = self.decode(self.model)
        path = os.path.join(self.directory, f"interpolation_epoch_{epoch + 1:04d}.png")
        picture = _common.save_picture(decoded, path, num_columns=self.steps)
        self.paths.append(path)
        if self._tensorboard is not None:
            self._tensorboard.write("interpolation", picture, epoch + 1)

    def on_train_end(self, logs=None):
        if self._tensorboard is not None:
            self._tensorboard.close()
