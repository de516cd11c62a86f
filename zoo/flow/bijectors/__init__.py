"""Bijector layers: invertible maps with tractable log-determinants.

Every bijector is a `keras.layers.Layer` with `forward(x) -> (z, log_det)`
and `inverse(z)`, built at construction from `event_shape` (one example's
shape); compose them with `Chain`, `FactorOut` and `Invert` and train the
result with `zoo.flow.FlowModel`.
"""

from zoo.flow.bijectors.actnorm import ActNorm
from zoo.flow.bijectors.affine_coupling import AffineCoupling
from zoo.flow.bijectors.bijector import Bijector
from zoo.flow.bijectors.chain import Chain
from zoo.flow.bijectors.factor_out import FactorOut
from zoo.flow.bijectors.invert import Invert
from zoo.flow.bijectors.invertible_conv1x1 import InvertibleConv1x1
from zoo.flow.bijectors.logit import Logit
from zoo.flow.bijectors.rational_quadratic_coupling import RationalQuadraticCoupling
from zoo.flow.bijectors.squeeze import Squeeze

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "Bijector",
    "Chain",
    "FactorOut",
    "Invert",
    "InvertibleConv1x1",
    "Logit",
    "RationalQuadraticCoupling",
    "Squeeze",
]
