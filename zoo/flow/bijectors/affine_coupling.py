"""`AffineCoupling`: RealNVP's and Glow's affine coupling layer."""

import keras
import numpy as np
from keras import ops

from zoo.flow._checks import check_choice, check_float, check_int, check_units, sum_event
from zoo.flow.bijectors import _networks
from zoo.flow.bijectors.bijector import Bijector

MASKS = ("alternating", "checkerboard", "channel")


def coupling_mask(event_shape, mask, parity):
    """1 where a dimension passes through unchanged (and conditions the rest)."""
    if mask == "alternating":
        keep = np.arange(event_shape[-1]) % 2 == parity
        shape = (1,) * (len(event_shape) - 1) + (event_shape[-1],)
    elif mask == "checkerboard":
        h, w = event_shape[0], event_shape[1]
        keep = (np.add.outer(np.arange(h), np.arange(w)) % 2 == parity)[..., None]
        shape = (h, w, 1)
    else:
        c = event_shape[-1]
        keep = np.arange(c) < c // 2
        keep = keep if parity == 0 else ~keep
        shape = (1,) * (len(event_shape) - 1) + (c,)
    return keep.reshape(shape).astype("float32")


@keras.saving.register_keras_serializable(package="zoo")
class AffineCoupling(Bijector):
    """Affine coupling (Dinh et al., 2017): `z = x * exp(s) + t` on half the
    dimensions, with `s, t` computed from the other half.

    A binary mask picks the half that passes through unchanged; a network
    reads it (the rest zeroed) and outputs `s` and `t` for the other half.
    The Jacobian is triangular, so `log_det = sum(s)`. Scales are soft-
    clamped, `s = c * tanh(raw / c)` with `c = scale_clamp`, so no layer can
    scale by more than `exp(c)`; with the network's zero-initialized last
    layer the coupling starts as the identity.

    Masks (`parity` 1 swaps the halves):

    - `"alternating"`: even/odd features (vectors) or channels;
    - `"checkerboard"`: pixels `(i + j) % 2 == parity` (images);
    - `"channel"`: the first/second half of the last axis (images after a
      squeeze, Glow; or vectors).

    The network is an MLP (`hidden_units`) for vectors and Glow's 3x3, 1x1,
    3x3 convolutions with `filters` channels for images.

    Args:
        event_shape: `(D,)` vectors or `(H, W, C)` images.
        mask: `"alternating"`, `"checkerboard"` or `"channel"` (above).
        parity: 0 or 1, which half conditions the other.
        hidden_units: the MLP's hidden widths (vectors).
        filters: the convolutional network's width (images).
        scale_clamp: `c`, the bound on each log-scale.
        seed: seeds the network's initializers.

    Example:

    ```python
    import keras
    import numpy as np
    from zoo.flow import AffineCoupling

    layer = AffineCoupling((8, 8, 1), mask="checkerboard", parity=1, filters=16)
    x = np.random.randn(4, 8, 8, 1).astype("float32")
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
        hidden_units=(64, 64),
        filters=32,
        scale_clamp=2.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(event_shape, seed=seed, **kwargs)
        rank = len(self.event_shape)
        if rank not in (1, 3):
            raise ValueError(
                "`event_shape` of AffineCoupling must be (features,) or (height, "
                f"width, channels); received event_shape={self.event_shape}."
            )
        self.mask = check_choice(mask, "mask", MASKS)
        if mask == "checkerboard" and rank != 3:
            raise ValueError(
                "mask='checkerboard' needs image events (height, width, channels); "
                f"received event_shape={self.event_shape}. Use 'alternating' or "
                "'channel' for vectors."
            )
        if parity not in (0, 1) or isinstance(parity, bool):
            raise ValueError(f"`parity` must be 0 or 1; received parity={parity!r}.")
        self.parity = int(parity)
        if mask in ("alternating", "channel") and self.event_shape[-1] < 2:
            raise ValueError(
                f"mask={mask!r} splits the last axis, which needs at least 2 "
                f"entries; received event_shape={self.event_shape}."
            )
        if mask == "checkerboard" and self.event_shape[0] * self.event_shape[1] < 2:
            raise ValueError(
                "mask='checkerboard' needs at least 2 pixels; received "
                f"event_shape={self.event_shape}."
            )
        self.hidden_units = check_units(hidden_units)
        self.filters = check_int(filters, "filters")
        self.scale_clamp = check_float(scale_clamp, "scale_clamp", low=0.0)
        self._mask = coupling_mask(self.event_shape, self.mask, self.parity)
        channels = self.event_shape[-1]
        if rank == 1:
            self.network = _networks.mlp(
                channels, 2 * channels, self.hidden_units, seed=self.seed,
                name="conditioner",
            )
        else:
            self.network = _networks.conv_net(
                self.event_shape, 2 * channels, self.filters, seed=self.seed,
                name="conditioner",
            )
        self.built = True

    def _scale_shift(self, x_kept):
        mask = ops.convert_to_tensor(self._mask, dtype=x_kept.dtype)
        # The flow's arithmetic stays in the data's dtype (float32) under a
        # mixed-precision policy; only the conditioner runs in float16.
        h = ops.cast(self.network(x_kept * mask), x_kept.dtype)
        raw, shift = ops.split(h, 2, axis=-1)
        c = self.scale_clamp
        # Zeroing s and t on the kept half makes z = x exp(s) + t exact there.
        log_scale = c * ops.tanh(raw / c) * (1.0 - mask)
        return log_scale, shift * (1.0 - mask)

    def forward(self, x, training=False):
        x = ops.convert_to_tensor(x)
        log_scale, shift = self._scale_shift(x)
        z = x * ops.exp(log_scale) + shift
        return z, sum_event(log_scale, len(self.event_shape))

    def inverse_and_log_det(self, z):
        z = ops.convert_to_tensor(z)
        # The kept half of z equals that of x, so the network sees the same input.
        log_scale, shift = self._scale_shift(z)
        x = (z - shift) * ops.exp(-log_scale)
        return x, -sum_event(log_scale, len(self.event_shape))

    def inverse(self, z):
        return self.inverse_and_log_det(z)[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            mask=self.mask,
            parity=self.parity,
            hidden_units=list(self.hidden_units),
            filters=self.filters,
            scale_clamp=self.scale_clamp,
        )
        return config
