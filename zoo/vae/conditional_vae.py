"""`ConditionalVAE`: a VAE whose encoder and decoder both see the class label."""

import keras
import numpy as np
from keras import ops

from zoo.core import validators
from zoo.vae import _common
from zoo.vae.vae import VAE


@keras.saving.register_keras_serializable(package="zoo")
class ConditionalVAE(VAE):
    """Conditional VAE (Sohn et al., 2015): q(z|x, y), p(z) = N(0, I), p(x|z, y).

    Everything of `VAE` holds, with the label `y` (an integer class in
    `[0, num_classes)`) given to both networks as a one-hot vector: train
    with `fit(x, labels)`; `log_prob(x, labels, ...)` bounds `log p(x|y)`;
    `sample(n, labels=...)` draws from p(x|y). Custom networks take
    `[x, one_hot]` (encoder) and `[z, one_hot]` (decoder).

    Args:
        num_classes: number of classes.
        Others as in `VAE`.

    Example:

    ```python
    from zoo.data import digits
    from zoo.vae import ConditionalVAE

    images, labels = digits("train")
    cvae = ConditionalVAE(data_shape=(8, 8, 1), num_classes=10, latent_dim=4,
                          num_levels=17, seed=0)
    cvae.compile()
    cvae.fit(images[:256], labels[:256], batch_size=64, epochs=1, verbose=0)
    sevens = cvae.sample(8, labels=7, seed=0)  # (8, 8, 8, 1)
    ```
    """

    def __init__(self, data_shape, num_classes=10, latent_dim=16, **kwargs):
        # Set before `VAE.__init__`, which builds the networks with it.
        self.num_classes = _common.check_positive_int(num_classes, "num_classes", 2)
        super().__init__(data_shape, latent_dim, **kwargs)

    def _num_classes(self):
        return self.num_classes

    def _one_hot(self, labels, n):
        """One-hot NumPy labels of `n` examples, for the eager methods."""
        if labels is None:
            raise ValueError(
                f"{type(self).__name__} needs `labels`: integers in "
                f"[0, {self.num_classes})."
            )
        labels = np.asarray(ops.convert_to_numpy(labels))
        if labels.ndim == 0:
            labels = np.full((n,), labels)
        labels = labels.reshape(-1)
        if labels.shape != (n,):
            raise ValueError(
                f"`labels` must be one integer or {n} of them (one per "
                f"example); received shape {labels.shape}."
            )
        if not np.issubdtype(labels.dtype, np.integer) or (
            labels.size and (labels.min() < 0 or labels.max() >= self.num_classes)
        ):
            raise ValueError(
                f"`labels` must be integers in [0, {self.num_classes}); "
                f"received {labels[:10]!r}..."
            )
        return np.eye(self.num_classes, dtype=np.float32)[labels]

    def validate_labels(self, y):
        """`fit` and `evaluate` refuse labels that are not classes in
        `[0, num_classes)`, before training."""
        if y is not None:
            validators.check_labels(y, self.num_classes, name="y")

    def _condition_from_y(self, y):
        if y is None:
            raise ValueError(
                f"{type(self).__name__} trains on `(x, labels)`: pass the "
                "labels as `y`, e.g. `fit(images, labels)`."
            )
        labels = ops.reshape(ops.cast(y, "int32"), (-1,))
        return ops.one_hot(labels, self.num_classes, dtype="float32")

    def encode(self, x, labels, batch_size=256):
        """`(mean, log_var)` of q(z|x, y), NumPy arrays `(n, latent_dim)`."""
        return self._encode(x, labels, batch_size)

    def decode(self, z, labels, batch_size=256):
        """The mean of p(x|z, y) in data space, a NumPy array."""
        return self._decode(z, labels, batch_size)

    def reconstruct(self, x, labels, batch_size=256):
        """`decode` of the posterior mean of each example given its label."""
        return self.decode(self.encode(x, labels, batch_size)[0], labels, batch_size)

    def sample(self, num_samples, seed=None, *, labels=None, mode="mean"):
        """Draws from p(x|y) (see `VAE.sample`).

        `labels`: one class for all samples, one per sample, or None for the
        classes in turn `0, 1, ..., num_classes - 1, 0, ...`.
        """
        num_samples = _common.check_positive_int(num_samples, "num_samples")
        if labels is None:
            labels = np.arange(num_samples) % self.num_classes
        return self._sample(num_samples, labels, seed, mode)

    def elbo(self, x, labels, num_samples=1, seed=None, batch_size=256):
        """Per-example ELBO of `log p(x|y)` in nats (see `VAE.elbo`)."""
        return self._elbo(x, labels, num_samples, seed, batch_size)

    def log_prob(self, x, labels, num_importance_samples=1, seed=None, chunk_size=8192):
        """Per-example importance-weighted bound on `log p(x|y)` in nats
        (see `VAE.log_prob`)."""
        return self._log_prob(x, labels, num_importance_samples, seed, chunk_size)

    def get_config(self):
        config = super().get_config()
        config["num_classes"] = self.num_classes
        return config
