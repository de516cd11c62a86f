"""`RationalQuadraticCoupling`: the coupling layer of neural spline flows."""

import math

import keras
import numpy as np
from keras import ops

from zoo.flow._checks import check_choice, check_float, check_int, check_units
from zoo.flow.bijectors import _networks
from zoo.flow.bijectors.affine_coupling import coupling_mask
from zoo.flow.bijectors.bijector import Bijector


def _knots(raw, num_bins, bound, minimum):
    """Bin sizes (at least `minimum` of the range) and knot positions on [-B, B]."""
    sizes = minimum + (1.0 - minimum * num_bins) * ops.softmax(raw, axis=-1)
    # The cumulative sum as one small matmul (K is tens at most).
    upper = np.triu(np.ones((num_bins, num_bins), "float32"))
    cum = ops.matmul(sizes, ops.convert_to_tensor(upper, dtype=sizes.dtype))
    # The ends are exactly -B and B, whatever the rounding of the sum.
    knots = ops.concatenate(
        [-bound * ops.ones_like(cum[..., :1]), 2.0 * bound * cum[..., :-1] - bound,
         bound * ops.ones_like(cum[..., :1])],
        axis=-1,
    )
    return knots[..., 1:] - knots[..., :-1], knots


def rational_quadratic_spline(x, raw_widths, raw_heights, raw_derivatives, bound,
                              inverse=False, min_bin_width=1e-3, min_bin_height=1e-3,
                              min_derivative=1e-3):
    """Monotonic rational-quadratic spline (Gregory & Delbourgo, 1982) on
    `[-bound, bound]`, the identity outside (linear tails, Durkan et al., 2019).

    `x` has shape `s`; the raw parameters `s + (K,)`, `s + (K,)` and
    `s + (K - 1,)` for `K` bins. Returns `(y, log |dy/dx|)` elementwise, or
    for `inverse=True` the inverse map and its log-derivative.
    """
    num_bins = raw_widths.shape[-1]
    widths, x_knots = _knots(raw_widths, num_bins, bound, min_bin_width)
    heights, y_knots = _knots(raw_heights, num_bins, bound, min_bin_height)
    # Slope 1 at both ends matches the identity tails.
    one = ops.ones_like(raw_derivatives[..., :1])
    derivs = ops.concatenate(
        [one, min_derivative + ops.softplus(raw_derivatives), one], axis=-1
    )

    inside = ops.logical_and(x >= -bound, x <= bound)
    # Clipping keeps the unused branch finite, so `where` passes no NaN gradients.
    xc = ops.clip(x, -bound, bound)
    knots = y_knots if inverse else x_knots
    index = ops.sum(ops.cast(xc[..., None] >= knots[..., 1:-1], "int32"), axis=-1)
    onehot = ops.one_hot(index, num_bins, dtype=x.dtype)

    def pick(a):
        return ops.sum(a * onehot, axis=-1)

    x_k, w_k = pick(x_knots[..., :-1]), pick(widths)
    y_k, h_k = pick(y_knots[..., :-1]), pick(heights)
    d_k, d_k1 = pick(derivs[..., :-1]), pick(derivs[..., 1:])
    slope = h_k / w_k
    curvature = d_k1 + d_k - 2.0 * slope

    if not inverse:
        theta = ops.clip((xc - x_k) / w_k, 0.0, 1.0)
        t1mt = theta * (1.0 - theta)
        denominator = slope + curvature * t1mt
        y = y_k + h_k * (slope * theta**2 + d_k * t1mt) / denominator
    else:
        dy = xc - y_k
        a = dy * curvature + h_k * (slope - d_k)
        b = h_k * d_k - dy * curvature
        c = -slope * dy
        discriminant = ops.maximum(b**2 - 4.0 * a * c, 0.0)
        # The root formula without cancellation (Durkan et al., appendix A.3).
        # In exact arithmetic theta is in [0, 1]; float32 rounding can put it
        # just outside, where the log-derivative below is NaN.
        theta = ops.clip(2.0 * c / (-b - ops.sqrt(discriminant)), 0.0, 1.0)
        t1mt = theta * (1.0 - theta)
        denominator = slope + curvature * t1mt
        y = x_k + theta * w_k
    log_derivative = (
        2.0 * ops.log(slope)
        + ops.log(d_k1 * theta**2 + 2.0 * slope * t1mt + d_k * (1.0 - theta) ** 2)
        - 2.0 * ops.log(denominator)
    )
    if inverse:
        log_derivative = -log_derivative
    return ops.where(inside, y, x), ops.where(inside, log_derivative, 0.0)


@keras.saving.register_keras_serializable(package="zoo")
class RationalQuadraticCoupling(Bijector):
    """Rational-quadratic spline coupling (Durkan et al., 2019) for vectors.

    The features picked by the mask (`"alternating"`: even/odd, or
    `"channel"`: first/second half; `parity` swaps) pass through and
    condition an MLP that outputs, for every other feature, a monotonic
    spline of `num_bins` rational-quadratic pieces on `[-bound, bound]`
    (bin widths, heights and inner-knot slopes), the identity outside. The
    Jacobian is triangular: `log_det` sums the splines' log-slopes. Far more
    flexible per layer than an affine coupling, and analytically invertible
    (one quadratic per dimension).

    The last layer of the MLP starts at zero with the slopes offset to 1, so
    the layer starts as the identity.

    Args:
        event_shape: `(D,)`, `D >= 2`.
        mask: `"alternating"` or `"channel"`; `parity` (0 or 1) swaps the
            halves.
        num_bins: spline pieces per dimension.
        bound: the spline acts on `[-bound, bound]`, the identity outside.
        hidden_units: the conditioner MLP's hidden widths.
        min_bin_width, min_bin_height, min_derivative: lower bounds that
            keep the spline well conditioned.
        seed: seeds the conditioner's initializers.

    Example:

    ```python
    import keras
    import numpy as np
    from zoo.flow import RationalQuadraticCoupling

    layer = RationalQuadraticCoupling((2,), parity=1, num_bins=8, bound=4.0)
    x = np.random.randn(16, 2).astype("float32")
    z, log_det = layer.forward(x)
    x_again = keras.ops.convert_to_numpy(layer.inverse(z))  # backend tensors in, out
    np.testing.assert_allclose(x_again, x, atol=1e-5)
    ```
    """

    def __init__(
        self,
        event_shape,
        mask="alternating",
        parity=0,
        num_bins=8,
        bound=4.0,
        hidden_units=(64, 64),
        min_bin_width=1e-3,
        min_bin_height=1e-3,
        min_derivative=1e-3,
        seed=None,
        **kwargs,
    ):
        super().__init__(event_shape, seed=seed, **kwargs)
        if len(self.event_shape) != 1 or self.event_shape[0] < 2:
            raise ValueError(
                "`event_shape` of RationalQuadraticCoupling must be (features,) "
                f"with at least 2 features; received event_shape={self.event_shape}."
            )
        self.mask = check_choice(mask, "mask", ("alternating", "channel"))
        if parity not in (0, 1) or isinstance(parity, bool):
            raise ValueError(f"`parity` must be 0 or 1; received parity={parity!r}.")
        self.parity = int(parity)
        self.num_bins = check_int(num_bins, "num_bins", minimum=2)
        self.bound = check_float(bound, "bound", low=0.0)
        self.hidden_units = check_units(hidden_units)
        limit = 1.0 / self.num_bins
        self.min_bin_width = check_float(min_bin_width, "min_bin_width", 0.0, limit)
        self.min_bin_height = check_float(min_bin_height, "min_bin_height", 0.0, limit)
        self.min_derivative = check_float(min_derivative, "min_derivative", 0.0, 1.0)
        self._mask = coupling_mask(self.event_shape, self.mask, self.parity)
        dim = self.event_shape[0]
        self._num_params = 3 * self.num_bins - 1
        self.network = _networks.mlp(
            dim, dim * self._num_params, self.hidden_units, seed=self.seed,
            name="conditioner",
        )
        # softplus(offset) + min_derivative = 1: a zero output is the identity.
        self._slope_offset = math.log(math.expm1(1.0 - self.min_derivative))
        self.built = True

    def _transform(self, x, inverse):
        x = ops.convert_to_tensor(x)
        mask = ops.convert_to_tensor(self._mask, dtype=x.dtype)
        # The spline is computed in the data's dtype (float32) under a
        # mixed-precision policy; only the conditioner runs in float16.
        params = ops.cast(self.network(x * mask), x.dtype)
        params = ops.reshape(params, (-1, self.event_shape[0], self._num_params))
        k = self.num_bins
        y, log_derivative = rational_quadratic_spline(
            x,
            params[..., :k],
            params[..., k: 2 * k],
            params[..., 2 * k:] + self._slope_offset,
            self.bound,
            inverse=inverse,
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
        )
        keep = mask > 0.5
        y = ops.where(keep, x, y)
        log_det = ops.sum(ops.where(keep, 0.0, log_derivative), axis=-1)
        return y, log_det

    def forward(self, x, training=False):
        return self._transform(x, inverse=False)

    def inverse_and_log_det(self, z):
        return self._transform(z, inverse=True)

    def inverse(self, z):
        return self._transform(z, inverse=True)[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            mask=self.mask,
            parity=self.parity,
            num_bins=self.num_bins,
            bound=self.bound,
            hidden_units=list(self.hidden_units),
            min_bin_width=self.min_bin_width,
            min_bin_height=self.min_bin_height,
            min_derivative=self.min_derivative,
        )
        return config
