"""Argument checks and image preprocessing shared by the flow models (not exported)."""

from zoo.flow._checks import check_float, check_shape
from zoo.flow.bijectors.logit import Logit


def check_data_shape(data_shape, owner, ranks=(1, 3)):
    shape = check_shape(data_shape, "data_shape", ranks=ranks)
    if len(shape) == 1 and shape[0] < 2:
        raise ValueError(
            f"{owner} couples halves of each example, so vectors need at least "
            f"2 features; received data_shape={shape}."
        )
    return shape


def check_scales(data_shape, num_scales, squeezes, owner):
    """Image sizes must halve `squeezes` times."""
    h, w, _ = data_shape
    factor = 2**squeezes
    if h % factor or w % factor:
        raise ValueError(
            f"{owner} with num_scales={num_scales} squeezes images {squeezes} "
            f"time(s), so height and width must be divisible by {factor}; "
            f"received data_shape={data_shape}. Lower `num_scales` or pad "
            "the images."
        )


def logit_layer(data_shape, num_levels, logit_alpha):
    """`Logit` from the data range onto the real line, or None."""
    if logit_alpha is None:
        return None
    logit_alpha = check_float(logit_alpha, "logit_alpha", low=0.0, high=0.5)
    # Dequantized data fill the bins around the grid: half a step past +-1.
    half = 0.0 if num_levels is None else 1.0 / (num_levels - 1)
    return Logit(data_shape, low=-1.0 - half, high=1.0 + half, alpha=logit_alpha,
                 name="logit")
