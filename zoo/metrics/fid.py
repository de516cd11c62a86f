"""FID on digits (shipped classifier) or with InceptionV3 (local weights)."""

import os

import keras
import numpy as np

from zoo.metrics.digits_classifier import digits_features
from zoo.metrics.distances import frechet_distance

INCEPTION_WEIGHTS = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


def inception_features(images, batch_size=64):
    """2048-d InceptionV3 pool features of `(n, h, w, 1 or 3)` images in [-1, 1].

    Needs Keras's ImageNet weights already on disk under
    `$KERAS_HOME/models/` (nothing is downloaded).
    """
    keras_home = os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras"))
    path = os.path.join(keras_home, "models", INCEPTION_WEIGHTS)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"features='inception' needs Keras's InceptionV3 weights at {path}; "
            "keras-genzoo never downloads at run time. Fetch them once on a "
            "connected machine with `keras.applications.InceptionV3("
            "include_top=False, weights='imagenet')` and copy the file there, "
            "or use features='digits'."
        )
    images = np.asarray(images, dtype=np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f"`images` must be (n, h, w, 1 or 3); received {images.shape}.")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    model = keras.applications.InceptionV3(
        include_top=False, weights=path, pooling="avg", input_shape=(299, 299, 3)
    )
    out = []
    for i in range(0, len(images), batch_size):
        batch = keras.ops.image.resize(images[i:i + batch_size], (299, 299),
                                       data_format="channels_last")
        out.append(keras.ops.convert_to_numpy(model(batch, training=False)))
    return np.concatenate(out).astype(np.float64)


_FEATURES = {"digits": digits_features, "inception": inception_features}


def fid(real, fake, features="digits"):
    """Fréchet distance between feature statistics of real and fake images.

    `features="digits"` uses the classifier shipped with keras-genzoo
    (trained on the digits train split; see `zoo/metrics/assets/`), for
    `(n, 8, 8, 1)` images in [-1, 1]. `features="inception"` uses
    InceptionV3 when its weights are on disk.

    Example:

    ```python
    from zoo.data import digits
    from zoo.metrics import fid
    fid(digits("train")[0], digits("test")[0])  # the floor for digits
    ```
    """
    if features not in _FEATURES:
        raise ValueError(
            f"`features` must be one of {sorted(_FEATURES)}; received {features!r}."
        )
    extract = _FEATURES[features]
    return frechet_distance(extract(real), extract(fake))
