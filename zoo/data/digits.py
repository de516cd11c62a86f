"""scikit-learn's 8x8 handwritten digits, with a fixed stratified train/test split."""

import numpy as np

__all__ = ["digits", "DIGITS_NUM_TEST"]

# 360 of 1797 images is the usual 80/20 split of this data set
# (what train_test_split(test_size=0.2) gives).
DIGITS_NUM_TEST = 360
_SPLIT_SEED = 0
_SPLITS = ("train", "test", "all")


def _split_indices(labels):
    """Return (train_idx, test_idx): sorted, disjoint, stratified by label.

    Each class gives its share of the 360 test images (rounded by largest
    remainder so the total is exactly 360); which images go to test is drawn
    with a NumPy Generator seeded with 0, class by class in label order, so
    the split depends only on the data and NumPy's PCG64 stream.
    """
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * DIGITS_NUM_TEST / len(labels)
    per_class = np.floor(quota).astype(int)
    shortfall = DIGITS_NUM_TEST - per_class.sum()
    # Largest remainder; ties go to the smaller label (stable sort).
    per_class[np.argsort(-(quota - per_class), kind="stable")[:shortfall]] += 1

    rng = np.random.default_rng(_SPLIT_SEED)
    test = []
    for cls, k in zip(classes, per_class, strict=True):
        members = np.flatnonzero(labels == cls)
        test.append(rng.permutation(members)[:k])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(len(labels)), test)
    return train, test


def digits(split="train"):
    """Load scikit-learn's 8x8 digits as images in [-1, 1] and integer labels.

    The 1797 images ship inside scikit-learn, so nothing is downloaded. Pixel
    intensities 0..16 map linearly to ``x / 8 - 1``, so 0 -> -1 and 16 -> 1,
    the range the zoo's image models work in.

    The split is fixed: 360 test images (about 20 %) stratified by label, the
    other 1437 for training, both returned in the data set's original order.
    Every class keeps its share (35 to 37 test images each).

    Args:
        split: ``"train"`` (1437 images), ``"test"`` (360) or ``"all"`` (1797).

    Returns:
        ``(images, labels)``: float32 array of shape ``(n, 8, 8, 1)``
        (channels-last) and int32 array of shape ``(n,)`` with values 0..9.

    Example:
        >>> from zoo.data import digits
        >>> images, labels = digits("train")
        >>> images.shape, images.dtype, labels.dtype
        ((1437, 8, 8, 1), dtype('float32'), dtype('int32'))
        >>> float(images.min()), float(images.max())
        (-1.0, 1.0)
    """
    if not isinstance(split, str) or split not in _SPLITS:
        raise ValueError(
            f"digits(split=...) must be one of {', '.join(map(repr, _SPLITS))}; " f"got {split!r}."
        )
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images.astype(np.float32) / 8.0 - 1.0)[..., None]
    labels = data.target.astype(np.int32)
    if split == "all":
        return images, labels
    train, test = _split_indices(labels)
    idx = train if split == "train" else test
    return images[idx], labels[idx]
