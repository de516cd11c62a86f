"""TensorBoard images for the callbacks, written with `tf.summary` on any
Keras backend (as Keras's own TensorBoard callback does). It lives in the
core, the only package that may import a backend library."""


class TensorBoardImages:
    """Writes images to a TensorBoard log directory with `tf.summary`."""

    def __init__(self, log_dir, name):
        try:
            import tensorboard  # noqa: F401 -- tf.summary needs it
            import tensorflow as tf
        except ImportError as error:
            raise ValueError(
                f"{name}(log_dir=...) writes TensorBoard images with "
                "`tf.summary`, which needs TensorFlow and TensorBoard: `pip "
                "install tensorflow-cpu tensorboard` (with any Keras backend), "
                "or leave `log_dir` out."
            ) from error
        self._tf = tf
        self.log_dir = str(log_dir)
        self._writer = None

    def write(self, tag, picture, step):
        tf = self._tf
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)
        with self._writer.as_default():
            tf.summary.image(tag, picture[None], step=step)
        self._writer.flush()

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
