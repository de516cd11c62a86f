"""`Glow`: actnorm, invertible 1x1 convolutions and affine couplings, multi-scale."""

import keras

from zoo.flow import _architectures
from zoo.flow._checks import check_float, check_int, check_units, derive_seed
from zoo.flow.bijectors import (
    ActNorm,
    AffineCoupling,
    Chain,
    FactorOut,
    Invert,
    InvertibleConv1x1,
    Squeeze,
)
from zoo.flow.flow_model import FlowModel


@keras.saving.register_keras_serializable(package="zoo")
class Glow(FlowModel):
    """Glow (Kingma & Dhariwal, 2018).

    A `FlowModel` whose steps of flow are `ActNorm` (initialized from the
    first training batch), `InvertibleConv1x1` (LU-parameterized with
    `lu=True`, the default) and a channel-split `AffineCoupling`.

    - Images `(H, W, C)`: `Logit` preprocessing (unless `logit_alpha` is
      None), then `num_scales` levels, each a `Squeeze`, `steps_per_scale`
      steps of flow, and (except the last) a `FactorOut` of half of the
      channels. The latent has the data's shape, each level's squeeze
      undone; every factored-out half has a standard normal prior (Glow's
      learned split priors are not implemented). `H` and `W` must be
      divisible by `2 ** num_scales`. Coupling networks: 3x3-1x1-3x3
      convolutions with `filters` channels, the last zero-initialized.
    - Vectors `(D,)`: `steps_per_scale` steps of flow, where the 1x1
      convolution is a learned invertible linear map and the couplings are
      MLPs with `hidden_units`.

    See `FlowModel` for `num_levels` and bits per dimension, and
    `InvertibleConv1x1` for how singular convolutions are detected
    (`max_condition`).

    Args:
        data_shape: `(H, W, C)` or `(D,)`.
        num_levels: None for continuous data, or the number of evenly spaced
            values the data take in [-1, 1] (17 for the digits).
        num_scales, steps_per_scale, filters: the architecture (`num_scales`
            only for images).
        hidden_units: coupling MLPs for vectors.
        lu: LU-parameterized 1x1 convolutions.
        max_condition: condition number above which a 1x1 convolution
            counts as singular.
        scale_clamp: bound on each coupling's log-scale.
        logit_alpha: the `Logit` preprocessing of images, or None.
        seed: seeds the initializers and the dequantization noise.

    Example:

    ```python
    from zoo.data import digits
    from zoo.flow import Glow

    images, _ = digits("train")
    glow = Glow((8, 8, 1), num_levels=17, num_scales=2, steps_per_scale=2,
                filters=16, seed=0)
    glow.compile()
    glow.fit(images[:256], batch_size=64, epochs=1, verbose=0)
    print(glow.bits_per_dim(digits("test")[0][:64], seed=0).mean())
    samples = glow.sample(16, seed=0, temperature=0.7)
    ```
    """

    def __init__(
        self,
        data_shape,
        num_levels=None,
        *,
        num_scales=2,
        steps_per_scale=4,
        filters=32,
        hidden_units=(64, 64),
        lu=True,
        max_condition=1e4,
        scale_clamp=2.0,
        logit_alpha=0.05,
        seed=None,
        **kwargs,
    ):
        owner = "Glow"
        data_shape = _architectures.check_data_shape(data_shape, owner)
        if num_levels is not None:
            num_levels = check_int(num_levels, "num_levels", minimum=2)
        if not isinstance(lu, bool):
            raise ValueError(f"`lu` must be True or False; received lu={lu!r}.")
        config = dict(
            num_scales=check_int(num_scales, "num_scales"),
            steps_per_scale=check_int(steps_per_scale, "steps_per_scale"),
            filters=check_int(filters, "filters"),
            hidden_units=list(check_units(hidden_units)),
            lu=lu,
            max_condition=check_float(max_condition, "max_condition", low=1.0),
            scale_clamp=check_float(scale_clamp, "scale_clamp", low=0.0),
            logit_alpha=None if logit_alpha is None else check_float(
                logit_alpha, "logit_alpha", low=0.0, high=0.5
            ),
        )
        if len(data_shape) == 1:
            bijector = Chain(self._steps(data_shape, 0, seed, config), name="glow")
        else:
            _architectures.check_scales(
                data_shape, config["num_scales"], config["num_scales"], owner
            )
            layers = []
            logit = _architectures.logit_layer(data_shape, num_levels, logit_alpha)
            if logit is not None:
                layers.append(logit)
            layers.append(self._level(data_shape, 0, seed, config))
            bijector = Chain(layers, name="glow")
        super().__init__(bijector, num_levels=num_levels, seed=seed, **kwargs)
        for key, value in config.items():
            setattr(self, key, value)

    @staticmethod
    def _steps(shape, level, seed, config):
        layers = []
        for i in range(config["steps_per_scale"]):
            prefix = f"level{level}_step{i}"
            layers += [
                ActNorm(shape, name=f"{prefix}_actnorm"),
                InvertibleConv1x1(
                    shape, lu=config["lu"], max_condition=config["max_condition"],
                    seed=derive_seed(seed, level, i, 0), name=f"{prefix}_conv1x1",
                ),
                AffineCoupling(
                    shape, mask="channel", parity=i % 2,
                    hidden_units=config["hidden_units"], filters=config["filters"],
                    scale_clamp=config["scale_clamp"],
                    seed=derive_seed(seed, level, i, 1), name=f"{prefix}_coupling",
                ),
            ]
        return layers

    @classmethod
    def _level(cls, shape, level, seed, config):
        squeeze = Squeeze(shape, name=f"level{level}_squeeze")
        squeezed = squeeze.output_event_shape
        layers = [squeeze] + cls._steps(squeezed, level, seed, config)
        if level < config["num_scales"] - 1:
            inner = (*squeezed[:-1], squeezed[-1] - squeezed[-1] // 2)
            layers.append(
                FactorOut(cls._level(inner, level + 1, seed, config),
                          channels=squeezed[-1], name=f"level{level}_factor_out")
            )
        layers.append(Invert(Squeeze(shape), name=f"level{level}_unsqueeze"))
        return Chain(layers, name=f"level{level}")

    def _constructor_config(self):
        return {
            "data_shape": list(self.data_shape),
            "num_levels": self.num_levels,
            "num_scales": self.num_scales,
            "steps_per_scale": self.steps_per_scale,
            "filters": self.filters,
            "hidden_units": list(self.hidden_units),
            "lu": self.lu,
            "max_condition": self.max_condition,
            "scale_clamp": self.scale_clamp,
            "logit_alpha": self.logit_alpha,
        }
