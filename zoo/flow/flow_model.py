"""`FlowModel`: a normalizing flow trained by maximum likelihood with `fit`."""

import math

import keras
import numpy as np
from keras import ops

from zoo.core import GenerativeModel
from zoo.flow._checks import (
    batch_slices,
    check_data,
    check_float,
    check_int,
    check_seed,
    sum_event,
    to_numpy,
)
from zoo.flow.bijectors.bijector import Bijector
from zoo.flow.bijectors.logit import Logit

_LOG_2PI = math.log(2.0 * math.pi)


@keras.saving.register_keras_serializable(package="zoo")
class FlowModel(GenerativeModel):
    """Any bijector as a density model: `x = f^-1(z)`, `z ~ N(0, I)`.

    `log p(x) = log N(f(x); 0, I) + log |det df/dx|`, exact. `fit(x)`
    minimizes the negative log-likelihood; `RealNVP`, `Glow` and
    `NeuralSplineFlow` are `FlowModel`s with a built-in bijector, and any
    `Chain` of zoo.flow bijectors makes one too.

    Discrete data (`num_levels`): data on `num_levels` evenly spaced values
    in [-1, 1] (17 for the digits: `x / 8 - 1` of 0..16), step
    `delta = 2 / (num_levels - 1)`. Each training and evaluation batch is
    dequantized with uniform noise of one step, `x + (u - 1/2) delta`, so
    the flow models a density over the bins around the grid values and
    cannot collapse onto the grid. The model's probability of a grid value
    is the mass of its bin, and the reported negative log-likelihood is the
    uniform-dequantization bound (Theis et al., 2016)

        -log P(x) <= E_u[-log p(x + (u - 1/2) delta)] - D log delta   (nats),

    which includes every change of variables from data space to the latent
    (the `Logit` preprocessing of the image flows among them). `loss` is
    this bound per example, `bits_per_dim` is `loss / (D ln 2)` with `D`
    the number of dimensions of one example: bits per dimension of the
    discrete data on the `num_levels` grid, log base 2. For continuous data
    (`num_levels=None`) `loss` is `-log p(x)` in nats.

    Logs: `loss`, and `bits_per_dim` for images. `evaluate` gives the same
    on held-out data.

    Methods, eager, on NumPy arrays (batched, compiled by `zoo.core`):

    - `log_prob(x)`: exact log-density in nats at points `x` of data space;
    - `bits_per_dim(x, seed=None, num_samples=1)`: the bound above per
      example, for data on the grid;
    - `forward(x) -> (z, log_det)`, `inverse(z) -> x`;
    - `sample(n, seed=None, temperature=1.0)`: `inverse(temperature * z)`,
      `z ~ N(0, I)` drawn with NumPy from `seed` (so a seed gives the same
      latents on every backend, and training's noise is not disturbed);
      for discrete data rounded to the grid (a draw from the discrete model).
    - `check_invertible()`: raises `numpy.linalg.LinAlgError` for a
      singular or ill-conditioned layer (see `InvertibleConv1x1`); run by
      the methods above and by `fit` and `evaluate`.

    Calling the model gives `forward`'s `(z, log_det)` as tensors.

    Args:
        bijector: a zoo.flow `Bijector` (or its serialized config) from
            data space to the latent.
        num_levels: None for continuous data, or the number of evenly
            spaced values the data take in [-1, 1] (above).
        seed: seeds the dequantization noise.

    Example:

    ```python
    from zoo.data import TwoMoons
    from zoo.flow import ActNorm, AffineCoupling, Chain, FlowModel

    flow = Chain([ActNorm((2,))] + [
        AffineCoupling((2,), parity=i % 2, seed=i) for i in range(6)])
    model = FlowModel(flow, seed=0)
    model.compile(optimizer="adam")
    x = TwoMoons().sample(2048, seed=0)
    model.fit(x, batch_size=256, epochs=2, verbose=0)
    nll = -model.log_prob(x).mean()           # nats
    samples = model.sample(512, seed=1)
    ```
    """

    def __init__(self, bijector, num_levels=None, seed=None, **kwargs):
        super().__init__(seed=seed, **kwargs)
        if isinstance(bijector, dict):
            bijector = keras.saving.deserialize_keras_object(bijector)
        if not isinstance(bijector, Bijector):
            raise ValueError(
                "`bijector` must be a zoo.flow Bijector (e.g. a Chain of "
                f"them); received {type(bijector).__name__}."
            )
        self.flow = bijector
        self.data_shape = tuple(bijector.event_shape)
        self.latent_shape = tuple(bijector.output_event_shape)
        if num_levels is not None:
            num_levels = check_int(num_levels, "num_levels", minimum=2)
        self.num_levels = num_levels
        self.num_dims = math.prod(self.data_shape)
        # Compiled eager methods, kept out of Keras's attribute tracking.
        object.__setattr__(self, "_compiled_fns", {})
        self.data_range = self._documented_range()
        self._mark_built()

    def _documented_range(self):
        """[-1, 1] for data on a grid; the range of a `Logit`
        preprocessing (whose log-density is NaN outside it); else None."""
        if self.num_levels is not None:
            return (-1.0, 1.0)
        for layer in self.flow._flatten_layers(include_self=True):
            if isinstance(layer, Logit):
                return (layer.low, layer.high)
        return None

    # ------------------------------------------------------------------
    # The density, as tensors.

    @property
    def quantization_step(self):
        """The grid step `2 / (num_levels - 1)`, or None for continuous data."""
        return None if self.num_levels is None else 2.0 / (self.num_levels - 1)

    def _bin_offset(self):
        # -log of the bin volume delta^D: turns a density into a probability.
        if self.num_levels is None:
            return 0.0
        return -self.num_dims * math.log(self.quantization_step)

    def _dequantize(self, x, seed):
        if self.num_levels is None:
            return x
        noise = keras.random.uniform(ops.shape(x), seed=seed, dtype=x.dtype)
        return x + (noise - 0.5) * self.quantization_step

    def _log_prob(self, x, training=False):
        z, log_det = self.flow.forward(x, training=training)
        base = -0.5 * sum_event(ops.square(z) + _LOG_2PI, len(self.latent_shape))
        return base + log_det

    def _nll(self, x, seed, training):
        x = ops.convert_to_tensor(x)
        return self._bin_offset() - self._log_prob(self._dequantize(x, seed), training)

    def call(self, x):
        return self.flow.forward(x)

    # ------------------------------------------------------------------
    # Training and evaluation steps.

    def log_names(self):
        return ("loss", "bits_per_dim") if len(self.data_shape) == 3 else ("loss",)

    def _logs(self, loss):
        logs = {"loss": loss}
        if len(self.data_shape) == 3:
            logs["bits_per_dim"] = loss / (self.num_dims * math.log(2.0))
        return logs

    @staticmethod
    def _mean(values, sample_weight):
        if sample_weight is None:
            return ops.mean(values)
        weights = ops.reshape(ops.cast(sample_weight, values.dtype), (-1,))
        return ops.mean(values * weights)

    def train_step_logic(self, x, y=None, sample_weight=None):
        def loss_fn():
            return self._mean(self._nll(x, self.seed_generator, True), sample_weight)

        loss = self.minimize("model", loss_fn)
        # ActNorm's first-batch initialization, recorded inside `loss_fn`.
        self.flow.finish_initialization()
        return self._logs(loss)

    def test_step_logic(self, x, y=None, sample_weight=None):
        nll = self._nll(x, self.seed_generator, False)
        return self._logs(self._mean(nll, sample_weight))

    def fit(self, *args, **kwargs):
        self.check_invertible()
        return super().fit(*args, **kwargs)

    def evaluate(self, *args, **kwargs):
        self.check_invertible()
        return super().evaluate(*args, **kwargs)

    # ------------------------------------------------------------------
    # Eager methods on NumPy arrays.

    def check_invertible(self):
        """Raises `numpy.linalg.LinAlgError` if a layer cannot be inverted."""
        self.flow.check_invertible()

    def _compiled_fn(self, name):
        fns = self._compiled_fns
        if name not in fns:
            body = {
                "forward": lambda x: self.flow.forward(x),
                "inverse": lambda z: self.flow.inverse(z),
            }[name]
            fns[name] = self.compile_function(body)
        return fns[name]

    def _run_batched(self, name, x, batch_size):
        batch_size = check_int(batch_size, "batch_size")
        if len(x) == 0:
            raise ValueError(f"`{name}` needs at least one example; received none.")
        fn = self._compiled_fn(name)
        outputs = []
        for s in batch_slices(len(x), batch_size):
            chunk = x[s]
            # Padding (with copies of the first row) to a few fixed sizes
            # spares a compilation per new batch size on JAX.
            size = min(batch_size, max(64, 2 ** math.ceil(math.log2(len(chunk)))))
            if size > len(chunk):
                pad = np.repeat(chunk[:1], size - len(chunk), axis=0)
                chunk = np.concatenate([chunk, pad])
            out = fn(ops.convert_to_tensor(chunk), seed=0)
            outputs.append(
                keras.tree.map_structure(lambda t, n=s.stop - s.start: to_numpy(t)[:n], out)
            )
        return keras.tree.map_structure(
            lambda *parts: np.concatenate(parts).astype(np.float32), *outputs
        )

    def log_prob(self, x, batch_size=1024):
        """Exact log-density in nats of each example of `x` (data space), `(n,)`.

        For discrete data this is the density of the dequantized model at
        `x`; `bits_per_dim` gives the probability of grid values.

        Points so far out that the float32 forward pass overflows (its
        latent or log-determinant is Inf or NaN, as for `|x|` near 1e38)
        get `-inf`: their density underflows float32, and the overflow is
        no density at all. NaN inputs give NaN.
        """
        x = check_data(x, self.data_shape, type(self).__name__)
        z, log_det = self.forward(x, batch_size=batch_size)
        z = z.reshape(len(z), -1).astype(np.float64)
        base = -0.5 * np.sum(np.square(z) + _LOG_2PI, axis=1)
        with np.errstate(over="ignore", invalid="ignore"):
            log_prob = (base + log_det).astype(np.float32)
        overflowed = ~(np.all(np.isfinite(z), axis=1) & np.isfinite(log_det))
        finite_input = np.all(np.isfinite(x.reshape(len(x), -1)), axis=1)
        log_prob[overflowed & finite_input] = -np.inf
        return log_prob

    def forward(self, x, batch_size=1024):
        """`(z, log_det)`: the latent of each example and `log|det dz/dx|`."""
        x = check_data(x, self.data_shape, type(self).__name__)
        self.check_invertible()
        return self._run_batched("forward", x, batch_size)

    def inverse(self, z, batch_size=1024):
        """The data-space point of each latent `z`; `inverse(forward(x)[0]) == x`."""
        z = check_data(z, self.latent_shape, type(self).__name__, name="z")
        self.check_invertible()
        return self._run_batched("inverse", z, batch_size)

    def sample(self, num_samples, seed=None, temperature=1.0, batch_size=1024):
        """`num_samples` draws, a float32 NumPy array in data space.

        `temperature` scales the latent's standard deviation (Glow's
        reduced-temperature sampling: below 1 gives smoother, more typical
        samples). The same integer `seed` gives the same samples.
        """
        num_samples = check_int(num_samples, "num_samples")
        temperature = check_float(temperature, "temperature", low=0.0)
        seed = check_seed(seed)
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((num_samples, *self.latent_shape)).astype(np.float32)
        x = self.inverse(temperature * z, batch_size=batch_size)
        if self.num_levels is not None:
            step = self.quantization_step
            x = np.clip(np.round((x + 1.0) / step) * step - 1.0, -1.0, 1.0)
        return x.astype(np.float32)

    def bits_per_dim(self, x, seed=None, num_samples=1, batch_size=1024):
        """Bits per dimension of each example of `x`, `(n,)` float64.

        For discrete data (`num_levels`), the uniform-dequantization bound on
        `-log2 P(x) / D` of the grid values, averaged over `num_samples`
        noise draws from `seed` (see the class docstring); for continuous
        data `-log2 p(x) / D` of the density.
        """
        x = check_data(x, self.data_shape, type(self).__name__)
        num_samples = check_int(num_samples, "num_samples")
        if self.num_levels is not None:
            levels = (x.astype(np.float64) + 1.0) / self.quantization_step
            if np.abs(levels - np.round(levels)).max(initial=0.0) > 1e-3 or (
                x.size and (x.min() < -1.0 - 1e-6 or x.max() > 1.0 + 1e-6)
            ):
                raise ValueError(
                    f"{type(self).__name__}.bits_per_dim: `x` must lie on the "
                    f"num_levels={self.num_levels} grid of [-1, 1] (step "
                    f"{self.quantization_step:g}); these values do not. "
                    "Use log_prob for densities at arbitrary points."
                )
        rng = np.random.default_rng(check_seed(seed))
        total = np.zeros(len(x))
        for _ in range(num_samples if self.num_levels is not None else 1):
            xd = x
            if self.num_levels is not None:
                noise = rng.random(x.shape, dtype=np.float32) - 0.5
                xd = x + noise * np.float32(self.quantization_step)
            total += self._bin_offset() - self.log_prob(xd, batch_size).astype(np.float64)
        repeats = num_samples if self.num_levels is not None else 1
        return total / repeats / (self.num_dims * math.log(2.0))

    # ------------------------------------------------------------------
    # Config.

    def _constructor_config(self):
        return {
            "bijector": keras.saving.serialize_keras_object(self.flow),
            "num_levels": self.num_levels,
        }

    def get_config(self):
        config = super().get_config()
        config.update(self._constructor_config())
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)
