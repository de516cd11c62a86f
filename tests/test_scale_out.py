"""The core does not stand in the way of data parallelism.

Each check runs in a fresh interpreter: virtual CPU devices must be set up
before the backend initialises, which this pytest process already did.
"""

import os
import subprocess
import sys
import textwrap

import keras
import pytest

pytestmark = pytest.mark.heavy  # each test starts a fresh interpreter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPTS = {
    "jax": """
        import os
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        import jax, keras, numpy as np
        from tests.core_models import TinyGAN, toy_data
        assert len(jax.devices()) == 2
        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices()))
        model = TinyGAN(penalty=1.0, batch_norm=True, seed=0)
        model.compile()
        history = model.fit(toy_data(64), batch_size=16, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert int(model.optimizer.iterations.numpy()) == 8
        sharding = model.generator.trainable_variables[0].value.sharding
        assert len(sharding.device_set) == 2, sharding
        print("OK")
    """,
    "tensorflow": """
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np
        from tests.core_models import TinyGAN, toy_data
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        with strategy.scope():
            model = TinyGAN(penalty=1.0, batch_norm=True, seed=0)
            model.compile()
        history = model.fit(toy_data(64), batch_size=16, epochs=2, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert int(model.optimizer.iterations.numpy()) == 8
        print("OK")
    """,
}


@pytest.mark.skipif(
    keras.backend.backend() not in SCRIPTS,
    reason="Keras's torch trainer has no built-in data parallelism to test",
)
def test_two_player_training_runs_data_parallel():
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPTS[keras.backend.backend()])],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]


def test_in_memory_batches_are_checked_against_the_replicas_before_any_step():
    import numpy as np

    from zoo.core.distributed import check_batch_split

    where = "the 4 devices of 'batch'"

    def check(rows, batch_size, last_batch):
        arguments = {"x": np.zeros((rows, 2), "float32"), "batch_size": batch_size}
        check_batch_split(arguments, "fit", 4, where, last_batch)

    for last_batch in ("even", "any"):
        check(64, 16, last_batch)  # whole batches
        with pytest.raises(ValueError, match=r"`batch_size` \(10\) must be a multiple of 4"):
            check(60, 10, last_batch)
    check(37, 16, "any")  # a last batch of 5
    with pytest.raises(ValueError, match=r"last batch \(5 of 37 examples in batches of 16\) "
                                         r"must be a multiple of 4"):
        check(37, 16, "even")
    check(35, 16, "any")  # a last batch of 3, one device left without examples
    # `validation_split` leaves int(40 * 0.1) = 4 out: 36 rows, a last batch of 4.
    check_batch_split({"x": np.zeros((40, 2)), "batch_size": 16, "validation_split": 0.1},
                      "fit", 4, where, "even")
