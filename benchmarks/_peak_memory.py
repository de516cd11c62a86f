"""Peak memory of one run, for `real_sizes.py`'s fresh-process runs.

`reset()` before the run, `peak()` after it: the growth of the process's
peak resident set (Linux's VmHWM, reset through `/proc/self/clear_refs`, so
that a peak from the imports does not hide the run's) and, on a GPU, of the
backend's peak device memory (`torch.cuda.max_memory_allocated`, JAX's
`peak_bytes_in_use`, TensorFlow's `get_memory_info(...)["peak"]`).
"""

import resource

import keras

BACKEND = keras.backend.backend()


def reset():
    """Starts a measurement; returns what `peak` needs."""
    return _reset_peak_rss(), _device_peak_reset()


def peak(start):
    """`{"rss_mb": ..., "device_mb": ...}` (device only on a GPU): the growth
    of the peaks since `reset`."""
    rss, device = start
    out = {"rss_mb": _peak_rss_mb() - rss}
    if device is not None:
        out["device_mb"] = _device_peak() - device
    return out


def _reset_peak_rss():
    """Resets the process's peak resident set (VmHWM) to its current size
    (Linux >= 4.0), so that the peak of the run alone is measured, not one
    from the imports; returns the current size in MB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_mb("VmRSS")
    except OSError:  # not Linux: the peak since the start, a bound from above
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _status_mb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB
    raise OSError(f"no {field} in /proc/self/status")


def _peak_rss_mb():
    try:
        return _status_mb("VmHWM")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _device_peak_reset():
    if BACKEND == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return torch.cuda.max_memory_allocated() / 2**20
    elif BACKEND == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if stats and jax.devices()[0].platform != "cpu":
            return stats.get("peak_bytes_in_use", 0) / 2**20
    else:
        import tensorflow as tf

        if tf.config.list_logical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")
            return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
    return None


def _device_peak():
    if BACKEND == "torch":
        import torch

        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    if BACKEND == "jax":
        import jax

        return jax.devices()[0].memory_stats()["peak_bytes_in_use"] / 2**20
    import tensorflow as tf

    return tf.config.experimental.get_memory_info("GPU:0")["peak"] / 2**20
