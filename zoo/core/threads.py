"""PyTorch's CPU threads on a machine that other processes keep busy.

PyTorch runs each CPU operation on one OpenMP thread per core and waits for
all of them at the end of the operation. When other processes keep cores
busy, one of those threads is often descheduled, and every operation waits
for it: the small operations of the zoo's models then run several times
slower than on one thread (docs/cli.md has the measurements). The command
line and the examples call `limit_torch_threads()` once at start; the
library itself never changes thread settings.
"""

import os
import sys


def idle_cores():
    """(cores this process may run on, how many of them other processes
    leave idle by the system's 1-minute count of runnable tasks,
    `os.getloadavg()`), or None where the system does not keep one
    (Windows).

    ```python
    from zoo.core.threads import idle_cores
    print(idle_cores())   # e.g. (2, 1)
    ```
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        cpus = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    return cpus, max(0, int(cpus - load + 0.5))


def limit_torch_threads(stream=None):
    """On PyTorch, uses only the cores other processes leave idle.

    When `OMP_NUM_THREADS` is unset and other processes leave fewer idle
    cores (by the system's 1-minute count of runnable tasks) than PyTorch has intra-op threads, sets
    `torch.set_num_threads(max(1, idle))` and prints one line saying so to
    `stream` (default `sys.stderr`). A set `OMP_NUM_THREADS` is the user's
    choice and is left alone, as are the other backends.

    Args:
        stream: where the one line goes (a text stream; default stderr).

    Returns the number of intra-op threads PyTorch now uses, or None when
    the backend is not PyTorch or nothing was checked. Call it once at the
    start of a script (it changes PyTorch's process-wide thread count):

        from zoo.core.threads import limit_torch_threads
        limit_torch_threads()
    """
    import keras

    if keras.backend.backend() != "torch" or os.environ.get("OMP_NUM_THREADS"):
        return None
    cores = idle_cores()
    if cores is None:
        return None
    import torch

    cpus, idle = cores
    current = torch.get_num_threads()
    threads = max(1, min(current, idle))
    if threads < current:
        torch.set_num_threads(threads)
        print(
            f"PyTorch: {threads} CPU thread{'s' * (threads > 1)} instead of {current}: "
            f"other processes keep {cpus - idle} of {cpus} cores busy "
            "(set OMP_NUM_THREADS to choose the count yourself).",
            file=stream or sys.stderr,
        )
    return threads
