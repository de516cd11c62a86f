"""The normalizing-flow family: exact likelihoods, trained with plain `fit`.

Models: `RealNVP` (vectors and multi-scale images), `Glow` (actnorm,
invertible 1x1 convolutions, affine couplings, multi-scale),
`NeuralSplineFlow` (rational-quadratic spline couplings for vectors), and
`FlowModel`, which trains any composition of the bijector layers.

Bijectors (`zoo.flow.bijectors`, also exported here): `AffineCoupling`,
`RationalQuadraticCoupling`, `ActNorm`, `InvertibleConv1x1`, `Squeeze`,
`Logit`, `Chain`, `FactorOut`, `Invert`, and their base class `Bijector`.
"""

from zoo.flow.bijectors import (
    ActNorm,
    AffineCoupling,
    Bijector,
    Chain,
    FactorOut,
    Invert,
    InvertibleConv1x1,
    Logit,
    RationalQuadraticCoupling,
    Squeeze,
)
from zoo.flow.flow_model import FlowModel
from zoo.flow.glow import Glow
from zoo.flow.neural_spline_flow import NeuralSplineFlow
from zoo.flow.realnvp import RealNVP

__all__ = [
    "RealNVP",
    "Glow",
    "NeuralSplineFlow",
    "FlowModel",
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
