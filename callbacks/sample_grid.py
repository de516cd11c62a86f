"""`SampleGrid`: a picture of the model's samples every few epochs."""

import os

import keras

from callbacks import _common
from zoo.core.tensorboard import TensorBoardImages


class SampleGrid(keras.callbacks.Callback):
    """Writes a PNG of `model.sample(num, seed=seed)` every `every` epochs.

    The same `seed` at every epoch draws the same latent noise, so the
    frames show how the model's mapping changes, not new noise. Images
    `(n, h, w, 1|3)` in [-1, 1] become a grid; 2-D points `(n, 2)` a scatter
    plot. Files are `directory/samples_epoch_0001.png`, ... (1-based
    epochs), written atomically. With `log_dir`, each picture also goes to
    TensorBoard under the tag `samples` (with `tf.summary`, so TensorFlow
    must be installed, whatever the Keras backend). It also runs after the
    last epoch. Place it after `EMA` in the callback list to draw from the
    averaged weights.

    Args:
        directory: where the PNGs go (created if missing).
        every: draw after every `every`-th epoch.
        num: number of samples.
        seed: integer seed of `model.sample`.
        log_dir: optional TensorBoard log directory.

    Example:

    ```python
    import tempfile
    from callbacks import SampleGrid
    from zoo.data import Ring
    from zoo.gan import GAN

    model = GAN(data_shape=(2,), latent_dim=4, hidden_units=(16,), seed=0)
    model.compile()
    out = tempfile.mkdtemp()
    model.fit(Ring().sample(256, seed=0), batch_size=64, epochs=2, verbose=0,
              callbacks=[SampleGrid(out, num=256)])
    # out/samples_epoch_0001.png, out/samples_epoch_0002.png
    ```
    """

    # In a multi-process run (torchrun), rank 0 alone writes the images.
    chief_only = True

    def __init__(self, directory, every=1, num=64, seed=0, log_dir=None):
        super().__init__()
        self.directory = _common.check_directory(directory)
        self.every = _common.check_positive_int(every, "every")
        self.num = _common.check_positive_int(num, "num")
        self.seed = _common.check_int(seed, "seed")
        self.log_dir = log_dir
        self._tensorboard = (
            None
            if log_dir is None
            else TensorBoardImages(
                _common.check_directory(log_dir, "log_dir"), "SampleGrid"
            )
        )
        self.paths = []

    def on_epoch_end(self, epoch, logs=None):
        if not _common.due(epoch, self.every, (self.params or {}).get("epochs")):
            return
        model = self.model
        if not hasattr(model, "sample"):
            raise ValueError(
                f"SampleGrid needs a model with `sample(num, seed=...)`; "
                f"{type(model).__name__} has none."
            )
        samples = model.sample(self.num, seed=self.seed)
        path = os.path.join(self.directory, f"samples_epoch_{epoch + 1:04d}.png")
        picture = _common.save_picture(samples, path)
        self.paths.append(path)
        if self._tensorboard is not None:
            self._tensorboard.write("samples", picture, epoch + 1)

    def on_train_end(self, logs=None):
        if self._tensorboard is not None:
            self._tensorboard.close()
