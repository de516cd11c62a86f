"""PNG output for examples and callbacks: image grids and 2-D scatter plots.

Pure NumPy and Pillow, so it works the same under every backend.
"""

import os

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def caption_font():
    """The font of figure captions: Pillow's default at 13 px, whose spaces
    are wide enough to read (at its default 10 px "mass on grid" reads as
    "masson grid")."""
    try:
        return ImageFont.load_default(size=13)
    except TypeError:  # Pillow before 10.1 has one bitmap font, of one size
        return ImageFont.load_default()


def image_grid(images, num_columns=None, scale=4, padding=1, value_range=(-1.0, 1.0)):
    """Tiles `(n, h, w, c)` images (c = 1 or 3) into one uint8 array.

    Example:

    ```python
    grid = image_grid(np.zeros((16, 8, 8, 1)), scale=2)  # (4*9+1)*2 square
    ```
    """
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            "`images` must have shape (n, height, width, 1 or 3); received "
            f"shape {images.shape}."
        )
    if scale < 1 or int(scale) != scale:
        raise ValueError(f"`scale` must be a positive integer; received {scale}.")
    low, high = value_range
    images = np.clip((images - low) / (high - low), 0.0, 1.0)
    n, h, w, c = images.shape
    cols = num_columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    grid = np.ones(
        (rows * (h + padding) + padding, cols * (w + padding) + padding, c),
        dtype=np.float32,
    )
    for i in range(n):
        r, k = divmod(i, cols)
        top, left = padding + r * (h + padding), padding + k * (w + padding)
        grid[top:top + h, left:left + w] = images[i]
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    grid = (grid * 255).round().astype(np.uint8)
    return grid[..., 0] if c == 1 else grid


def _write_png(array_or_image, path):
    """Writes a PNG atomically: a crash never leaves half a file at `path`."""
    image = (
        array_or_image
        if isinstance(array_or_image, Image.Image)
        else Image.fromarray(array_or_image)
    )
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        image.save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def save_image_grid(images, path, num_columns=None, scale=4, value_range=(-1.0, 1.0)):
    """Saves `(n, h, w, c)` images in `value_range` as one PNG grid.

    Example:

    ```python
    from zoo.data import digits
    save_image_grid(digits()[0][:64], "/tmp/digits.png")
    ```
    """
    grid = image_grid(images, num_columns=num_columns, scale=scale, value_range=value_range)
    return _write_png(grid, path)


_COLOURS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]


def scatter_image(point_sets, size=400, limits=None, radius=1):
    """Draws 2-D point sets side by side, one panel each; returns a PIL image.

    `point_sets` is a list of `(n, 2)` arrays (or a dict title -> array).
    `limits` is `(low, high)` for both axes; by default it spans all points.
    """
    if isinstance(point_sets, dict):
        titles, point_sets = list(point_sets), list(point_sets.values())
    else:
        titles = [""] * len(point_sets)
    point_sets = [np.asarray(p, dtype=np.float64) for p in point_sets]
    for p in point_sets:
        if p.ndim != 2 or p.shape[1] != 2:
            raise ValueError(
                f"Each point set must have shape (n, 2); received {p.shape}."
            )
    if limits is None:
        every = np.concatenate(point_sets)
        low, high = float(every.min()), float(every.max())
        margin = 0.05 * (high - low + 1e-9)
        limits = (low - margin, high + margin)
    low, high = limits
    image = Image.new("RGB", (size * len(point_sets), size + 20), "white")
    draw = ImageDraw.Draw(image)
    for k, (title, points) in enumerate(zip(titles, point_sets)):
        pixels = (points - low) / (high - low) * (size - 1)
        colour = _COLOURS[k % len(_COLOURS)]
        for px, py in pixels:
            if 0 <= px < size and 0 <= py < size:
                cx, cy = k * size + px, 20 + (size - 1 - py)
                draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=colour)
        draw.text((k * size + 5, 3), title, fill="black", font=caption_font())
        draw.line([(k * size, 0), (k * size, size + 20)], fill="grey")
    return image


def save_scatter(point_sets, path, size=400, limits=None, radius=1):
    """Saves `scatter_image(point_sets, ...)` as a PNG at `path`."""
    return _write_png(scatter_image(point_sets, size=size, limits=limits, radius=radius), path)
