"""`VectorQuantizer`: the codebook of a VQ-VAE (van den Oord et al., 2017)."""

import numbers

import keras
import numpy as np
from keras import ops


def _check_fraction(value, name, allow_none):
    if value is None and allow_none:
        return None
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not 0.0 < value < 1.0
    ):
        raise ValueError(
            f"`{name}` must be {'None or ' if allow_none else ''}a float "
            f"strictly between 0 and 1; received {name}={value!r}."
        )
    return float(value)


@keras.saving.register_keras_serializable(package="zoo")
class VectorQuantizer(keras.layers.Layer):
    """Nearest-neighbour quantization of the last axis against a codebook.

    `call(z)` returns the quantized `z` with the straight-through estimator:
    the forward value is the nearest code, the gradient passes to `z`
    unchanged (the argmin itself has no gradient). The losses that train the
    codebook and keep the encoder close to it are the model's business;
    `quantize_vectors` gives the indices and codes they need.

    The codebook is trainable (learned from a codebook loss), or, with
    `ema_decay`, non-trainable and moved by exponential moving averages of
    the vectors assigned to each code (van den Oord et al., 2017, appendix
    A.1): `update(z, indices, seed)` does that once per training step.
    `update` also keeps `code_usage`, an exponential moving average of how
    many vectors each code receives per batch, and restarts every code whose
    usage falls below `dead_code_threshold` at a randomly chosen vector of
    the batch, so that unused codes rejoin the data (0 turns that off).

    Args:
        num_codes: codebook size.
        code_dim: dimension of each code.
        ema_decay: None (codebook trained by its loss) or the decay of
            the moving averages, in (0, 1).
        usage_decay: decay of the `code_usage` moving average.
        dead_code_threshold: restart codes getting fewer vectors than this
            per batch; 0 turns restarts off.
        seed: seeds the codebook's initial values and the restarts.

    Example:

    ```python
    import numpy as np
    from zoo.layers.vector_quantizer import VectorQuantizer

    vq = VectorQuantizer(num_codes=4, code_dim=2)
    vq.codebook.assign(np.eye(4, 2, dtype="float32"))
    indices, codes = vq.quantize_vectors(np.array([[0.9, 0.1], [0.0, 0.8]], "float32"))
    counts, usage, perplexity = vq.code_statistics(indices)  # usage 0.5
    ```
    """

    def __init__(
        self,
        num_codes,
        code_dim,
        *,
        ema_decay=None,
        usage_decay=0.99,
        dead_code_threshold=1.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in (("num_codes", num_codes), ("code_dim", code_dim)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ValueError(
                    f"`{name}` must be a positive integer; received {name}={value!r}."
                )
        if num_codes < 2:
            raise ValueError(
                f"`num_codes` must be at least 2; received num_codes={num_codes!r}."
            )
        if (
            not isinstance(dead_code_threshold, numbers.Real)
            or isinstance(dead_code_threshold, bool)
            or dead_code_threshold < 0
        ):
            raise ValueError(
                "`dead_code_threshold` must be a float >= 0 (vectors per batch "
                "below which a code is restarted; 0 disables restarts); "
                f"received dead_code_threshold={dead_code_threshold!r}."
            )
        self.num_codes = int(num_codes)
        self.code_dim = int(code_dim)
        self.ema_decay = _check_fraction(ema_decay, "ema_decay", allow_none=True)
        self.usage_decay = _check_fraction(usage_decay, "usage_decay", allow_none=False)
        self.dead_code_threshold = float(dead_code_threshold)
        self.seed = seed
        # Variance scaling (fan-in uniform) from NumPy: the same codebook on
        # every backend for one seed, and no compiled random program under
        # JAX's eager mode.
        limit = np.sqrt(3.0 / self.num_codes)
        rng = np.random.default_rng(
            int(np.random.randint(0, 2**31 - 1)) if seed is None else seed
        )
        self.codebook = self.add_weight(
            shape=(self.num_codes, self.code_dim),
            initializer=keras.initializers.Constant(
                rng.uniform(-limit, limit, (self.num_codes, self.code_dim))
            ),
            trainable=self.ema_decay is None,
            name="codebook",
        )
        if self.ema_decay is not None:
            # Sizes start at one and sums at the codes, so that the codebook
            # the averages imply is the initial one.
            self.ema_cluster_size = self.add_weight(
                shape=(self.num_codes,), initializer="ones", trainable=False,
                name="ema_cluster_size",
            )
            self.ema_code_sum = self.add_weight(
                shape=(self.num_codes, self.code_dim), initializer="zeros",
                trainable=False, name="ema_code_sum",
            )
            # A copy: two variables sharing one buffer break JAX's buffer
            # donation.
            self.ema_code_sum.assign(ops.convert_to_numpy(self.codebook))
        # Starting at zero marks every code dead: the first training step
        # restarts the whole codebook at encoder outputs, a data-dependent
        # initialization (unless restarts are off).
        self.code_usage = self.add_weight(
            shape=(self.num_codes,), initializer="zeros", trainable=False,
            name="code_usage",
        )
        self.built = True

    def _flatten(self, z):
        return ops.reshape(z, (-1, self.code_dim))

    def nearest(self, z):
        """Index of the nearest code for each vector of `z` (shape `z[..., 0]`)."""
        z = ops.convert_to_tensor(z)
        flat = ops.cast(self._flatten(z), "float32")
        codebook = ops.cast(self.codebook, "float32")
        distances = (
            ops.sum(flat * flat, axis=1, keepdims=True)
            - 2.0 * ops.matmul(flat, ops.transpose(codebook))
            + ops.sum(codebook * codebook, axis=1)[None, :]
        )
        indices = ops.cast(ops.argmin(distances, axis=1), "int32")
        return ops.reshape(indices, ops.shape(z)[:-1])

    def lookup(self, indices):
        """The codes of integer `indices`, shape `indices.shape + (code_dim,)`."""
        return ops.take(self.codebook, ops.cast(indices, "int32"), axis=0)

    def quantize_vectors(self, z):
        """`(indices, codes)`: the nearest codes, differentiable in the codebook."""
        indices = self.nearest(ops.stop_gradient(ops.convert_to_tensor(z)))
        return indices, self.lookup(indices)

    def call(self, z):
        _, codes = self.quantize_vectors(z)
        return z + ops.stop_gradient(codes - z)

    def code_statistics(self, indices):
        """`(counts, usage, perplexity)` of a set of code indices.

        `counts[k]` is how many indices equal `k`; `usage` the fraction of
        codes used at least once; `perplexity` the exponential of the entropy
        of the empirical code distribution (the effective number of codes:
        `num_codes` when all are used equally, 1 when one code takes all).
        """
        flat = ops.reshape(ops.cast(indices, "int32"), (-1,))
        counts = ops.sum(ops.one_hot(flat, self.num_codes, dtype="float32"), axis=0)
        usage = ops.mean(ops.cast(counts > 0, "float32"))
        p = counts / ops.maximum(ops.sum(counts), 1.0)
        entropy = -ops.sum(p * ops.log(ops.maximum(p, 1e-12)))
        return counts, usage, ops.exp(entropy)

    def update(self, z, indices, seed):
        """One training step's state updates from encoder outputs `z`.

        Moves the EMA codebook (if any) towards the mean of its vectors,
        updates `code_usage`, and restarts dead codes at vectors of `z`
        drawn with `seed` (a `SeedGenerator` owned by the model).
        """
        flat = ops.stop_gradient(self._flatten(ops.convert_to_tensor(z)))
        flat = ops.cast(flat, "float32")
        one_hot = ops.one_hot(
            ops.reshape(ops.cast(indices, "int32"), (-1,)), self.num_codes,
            dtype="float32",
        )
        counts = ops.sum(one_hot, axis=0)
        codebook = ops.convert_to_tensor(self.codebook)
        if self.ema_decay is not None:
            decay = self.ema_decay
            size = decay * self.ema_cluster_size + (1.0 - decay) * counts
            total = decay * self.ema_code_sum + (1.0 - decay) * ops.matmul(
                ops.transpose(one_hot), flat
            )
            # An unused code's size and sum shrink by the same factor, so
            # their ratio (the code) stays put until the size underflows.
            codebook = ops.where(
                size[:, None] > 1e-20,
                total / ops.maximum(size, 1e-20)[:, None],
                codebook,
            )
        usage = self.usage_decay * self.code_usage + (1.0 - self.usage_decay) * counts
        if self.dead_code_threshold > 0:
            dead = usage < self.dead_code_threshold
            num_vectors = ops.cast(ops.shape(flat)[0], "float32")
            picks = ops.cast(
                ops.floor(keras.random.uniform((self.num_codes,), seed=seed) * num_vectors),
                "int32",
            )
            picks = ops.minimum(picks, ops.cast(num_vectors, "int32") - 1)
            codebook = ops.where(dead[:, None], ops.take(flat, picks, axis=0), codebook)
            # A restarted code gets the usage of a live one, a grace period
            # before it can be judged dead again.
            usage = ops.where(dead, self.dead_code_threshold * 2.0, usage)
            if self.ema_decay is not None:
                size = ops.where(dead, 1.0, size)
                total = ops.where(dead[:, None], codebook, total)
        self.code_usage.assign(usage)
        self.codebook.assign(ops.cast(codebook, self.codebook.dtype))
        if self.ema_decay is not None:
            self.ema_cluster_size.assign(size)
            self.ema_code_sum.assign(total)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_codes=self.num_codes,
            code_dim=self.code_dim,
            ema_decay=self.ema_decay,
            usage_decay=self.usage_decay,
            dead_code_threshold=self.dead_code_threshold,
            seed=self.seed,
        )
        return config
