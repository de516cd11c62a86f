"""`RealNVP`: affine coupling flows for vectors and multi-scale images."""

import keras

from zoo.flow import _architectures
from zoo.flow._checks import check_float, check_int, check_units, derive_seed
from zoo.flow.bijectors import (
    ActNorm,
    AffineCoupling,
    Chain,
    FactorOut,
    Invert,
    Squeeze,
)
from zoo.flow.flow_model import FlowModel


@keras.saving.register_keras_serializable(package="zoo")
class RealNVP(FlowModel):
    """Real NVP (Dinh, Sohl-Dickstein & Bengio, 2017).

    A `FlowModel` (exact `log_prob`, `sample`, `forward`, `inverse`,
    `bits_per_dim`; trained by `fit(x)` on the negative log-likelihood)
    whose bijector is built from `data_shape`:

    - Vectors `(D,)`: `ActNorm` (data-dependent standardization), then
      `num_couplings` `AffineCoupling`s with alternating even/odd masks,
      each an MLP with `hidden_units`.
    - Images `(H, W, C)`: `Logit` preprocessing (unless `logit_alpha` is
      None), then the multi-scale architecture: each of the first
      `num_scales - 1` scales applies `couplings_per_scale` checkerboard
      couplings, a `Squeeze`, `couplings_per_scale` channel couplings, and
      factors out half of the channels (`FactorOut`); the last scale applies
      `couplings_per_scale + 1` checkerboard couplings. Coupling networks
      are 3x3-1x1-3x3 convolutions with `filters` channels. The latent has
      the data's shape. `H` and `W` must be divisible by
      `2 ** (num_scales - 1)`.

    See `FlowModel` for `num_levels` (discrete data, dequantization and how
    bits per dimension are computed).

    Args:
        data_shape: `(D,)` or `(H, W, C)`.
        num_levels: None for continuous data, or the number of evenly spaced
            values the data take in [-1, 1] (17 for the digits).
        num_couplings, hidden_units: the vector architecture.
        num_scales, couplings_per_scale, filters: the image architecture.
        scale_clamp: bound on each coupling's log-scale (see AffineCoupling).
        logit_alpha: the `Logit` preprocessing of images, or None for none.
        seed: seeds the initializers and the dequantization noise.

    Example:

    ```python
    from zoo.data import digits
    from zoo.flow import RealNVP

    images, _ = digits("train")
    flow = RealNVP((8, 8, 1), num_levels=17, num_scales=2, filters=16, seed=0)
    flow.compile()
    flow.fit(images[:256], batch_size=64, epochs=1, verbose=0)
    bpd = flow.bits_per_dim(digits("test")[0][:64], seed=0).mean()
    samples = flow.sample(16, seed=0, temperature=0.8)   # (16, 8, 8, 1)
    ```
    """

    def __init__(
        self,
        data_shape,
        num_levels=None,
        *,
        num_couplings=8,
        hidden_units=(64, 64),
        num_scales=2,
        couplings_per_scale=3,
        filters=32,
        scale_clamp=2.0,
        logit_alpha=0.05,
        seed=None,
        **kwargs,
    ):
        owner = "RealNVP"
        data_shape = _architectures.check_data_shape(data_shape, owner)
        if num_levels is not None:
            num_levels = check_int(num_levels, "num_levels", minimum=2)
        self_config = dict(
            num_couplings=check_int(num_couplings, "num_couplings"),
            hidden_units=list(check_units(hidden_units)),
            num_scales=check_int(num_scales, "num_scales"),
            couplings_per_scale=check_int(couplings_per_scale, "couplings_per_scale"),
            filters=check_int(filters, "filters"),
            scale_clamp=check_float(scale_clamp, "scale_clamp", low=0.0),
            logit_alpha=None if logit_alpha is None else check_float(
                logit_alpha, "logit_alpha", low=0.0, high=0.5
            ),
        )
        if len(data_shape) == 1:
            bijector = self._vector_flow(data_shape, seed, **self_config)
        else:
            _architectures.check_scales(
                data_shape, self_config["num_scales"], self_config["num_scales"] - 1, owner
            )
            layers = []
            logit = _architectures.logit_layer(data_shape, num_levels, logit_alpha)
            if logit is not None:
                layers.append(logit)
            layers.append(self._image_scale(data_shape, 0, seed, self_config))
            bijector = Chain(layers, name="realnvp")
        super().__init__(bijector, num_levels=num_levels, seed=seed, **kwargs)
        for key, value in self_config.items():
            setattr(self, key, value)

    @staticmethod
    def _vector_flow(data_shape, seed, num_couplings, hidden_units, scale_clamp, **_):
        layers = [ActNorm(data_shape, name="actnorm")]
        for i in range(num_couplings):
            layers.append(
                AffineCoupling(
                    data_shape, mask="alternating", parity=i % 2,
                    hidden_units=hidden_units, scale_clamp=scale_clamp,
                    seed=derive_seed(seed, i), name=f"coupling_{i}",
                )
            )
        return Chain(layers, name="realnvp")

    @classmethod
    def _image_scale(cls, shape, level, seed, config):
        n = config["couplings_per_scale"]

        def coupling(event_shape, mask, i):
            return AffineCoupling(
                event_shape, mask=mask, parity=i % 2, filters=config["filters"],
                scale_clamp=config["scale_clamp"],
                seed=derive_seed(seed, level, i, 0 if mask == "checkerboard" else 1),
                name=f"scale{level}_{mask}_{i}",
            )

        if level == config["num_scales"] - 1:
            return Chain(
                [coupling(shape, "checkerboard", i) for i in range(n + 1)],
                name=f"scale{level}",
            )
        layers = [coupling(shape, "checkerboard", i) for i in range(n)]
        squeeze = Squeeze(shape, name=f"scale{level}_squeeze")
        squeezed = squeeze.output_event_shape
        layers.append(squeeze)
        layers += [coupling(squeezed, "channel", i) for i in range(n)]
        inner = (*squeezed[:-1], squeezed[-1] - squeezed[-1] // 2)
        layers.append(
            FactorOut(cls._image_scale(inner, level + 1, seed, config),
                      channels=squeezed[-1], name=f"scale{level}_factor_out")
        )
        layers.append(Invert(Squeeze(shape), name=f"scale{level}_unsqueeze"))
        return Chain(layers, name=f"scale{level}")

    def _constructor_config(self):
        return {
            "data_shape": list(self.data_shape),
            "num_levels": self.num_levels,
            "num_couplings": self.num_couplings,
            "hidden_units": list(self.hidden_units),
            "num_scales": self.num_scales,
            "couplings_per_scale": self.couplings_per_scale,
            "filters": self.filters,
            "scale_clamp": self.scale_clamp,
            "logit_alpha": self.logit_alpha,
        }
