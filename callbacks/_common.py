"""Argument checks and output helpers shared by the callbacks."""

import numpy as np

from zoo.images import save_image_grid, save_scatter


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer; received {name}={value!r}.")
    return int(value)


def check_int(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer; received {name}={value!r}.")
    return int(value)


def check_directory(directory, name="directory"):
    if not isinstance(directory, (str, bytes)) and not hasattr(directory, "__fspath__"):
        raise ValueError(
            f"`{name}` must be a path (str or os.PathLike); received {name}={directory!r}."
        )
    return str(directory)


def due(epoch, every, epochs=None):
    """Whether a callback that runs every `every` epochs runs after `epoch`
    (0-based): after epochs every, 2*every, ... and after the last one."""
    last = epochs is not None and epoch == epochs - 1
    return (epoch + 1) % every == 0 or last


def save_picture(samples, path, num_columns=None):
    """Writes samples as an image grid (n, h, w, 1|3) or a 2-D scatter (n, 2);
    returns the picture as a uint8 (h, w, c) array for TensorBoard."""
    samples = np.asarray(samples)
    if samples.ndim == 4 and samples.shape[-1] in (1, 3):
        save_image_grid(samples, path, num_columns=num_columns)
    elif samples.ndim == 2 and samples.shape[1] == 2:
        save_scatter([samples], path)
    else:
        raise ValueError(
            "Can only draw images of shape (n, height, width, 1 or 3) or 2-D "
            f"points of shape (n, 2); the model produced shape {samples.shape}."
        )
    from PIL import Image

    with Image.open(path) as image:
        picture = np.asarray(image.convert("RGB"))
    return picture
