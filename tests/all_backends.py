"""Run the test suite once per Keras backend, each in its own process.

Usage (from anywhere; paths are taken relative to the current directory):

    python tests/all_backends.py [--backends jax,torch] [pytest arguments ...]

Every argument except ``--backends`` goes to ``python -m pytest`` unchanged,
e.g. ``python tests/all_backends.py tests/test_data.py -x -k moons``.
Each run gets ``KERAS_BACKEND`` (which Keras reads after, and so in preference
to, ``~/.keras/keras.json``), a fresh empty ``KERAS_HOME`` so no user config
or cache leaks in, and ``TF_CPP_MIN_LOG_LEVEL=2`` to quiet TensorFlow's C++ logs.
On JAX, unless set already, ``JAX_DISABLE_MOST_OPTIMIZATIONS=1``: the tests
compile many small programs and run each a few times, so XLA's optimizing
passes cost more than they save. Set it to 0 to test the programs users'
runs compile. Also on JAX, unless ``JAX_COMPILATION_CACHE_DIR`` is set, a
compilation cache in a temporary directory of the run's (every program
cached, however small), shared by the workers and the processes tests start:
many tests build the same tiny models, whose programs then compile once.
With pytest-xdist installed (the `test` extra) and no `-n` given, the tests
of each backend run in `min(cores, 4)` worker processes, one test file per
worker at a time (`-n N --dist loadfile --no-loadscope-reorder`; pass `-n 0`
to run in one process), in the order tests/conftest.py gives them (the files marked `heavy`
first), and unless `OMP_NUM_THREADS` is set each worker's native thread
pools get `cores // workers` threads, so that the workers do not oversubscribe
the cores. Output streams as it comes; a summary table follows. The exit status is 0 only
if every backend's pytest passed; "no tests collected" (pytest's status 5)
counts as a failure.
"""

import importlib.util
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

BACKENDS = ("tensorflow", "jax", "torch")
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
# pytest's closing line, with or without -q: "==== 3 passed, 1 skipped in 2.01s ====".
SUMMARY = re.compile(
    r"\b(passed|failed|errors?|skipped|deselected|xfailed|xpassed|no tests ran)\b.*\bin [\d.]+s"
)


def parse_args(argv):
    """Split ``argv`` into the chosen backends and the arguments for pytest."""
    backends, rest = list(BACKENDS), []
    args = iter(argv)
    for arg in args:
        if arg in ("-h", "--help"):
            print(__doc__.strip())
            sys.exit(0)
        if arg == "--backends" or arg.startswith("--backends="):
            value = arg.partition("=")[2] if "=" in arg else next(args, "")
            backends = [b.strip() for b in value.split(",") if b.strip()]
            unknown = [b for b in backends if b not in BACKENDS]
            if unknown or not backends:
                sys.exit(
                    f"all_backends.py: --backends takes a comma-separated subset of "
                    f"{','.join(BACKENDS)}; got {value!r}."
                )
        else:
            rest.append(arg)
    return backends, rest


def absolutize(args):
    """Make path arguments (also ``path::test_id``) absolute, since pytest runs
    from the repository root so that pyproject.toml's settings apply."""
    out = []
    for arg in args:
        path, sep, node = arg.partition("::")
        if not arg.startswith("-") and path and os.path.exists(path):
            arg = os.path.abspath(path) + sep + node
        out.append(arg)
    return out


def workers(pytest_args):
    """How many pytest-xdist workers to add (0: none): `min(cores, 4)` when
    xdist is installed and the arguments choose no `-n` themselves."""
    if any(a.startswith(("-n", "--numprocesses")) for a in pytest_args):
        return 0
    cores = os.cpu_count() or 1
    if cores < 2 or importlib.util.find_spec("xdist") is None:
        return 0
    return min(cores, 4)


def run_one(backend, pytest_args):
    """Run pytest under ``backend``; return (exit status, summary line, seconds)."""
    print(f"\n{'=' * 30} KERAS_BACKEND={backend} {'=' * 30}", flush=True)
    with tempfile.TemporaryDirectory(prefix=f"zoo-tests-{backend}-") as scratch:
        keras_home = os.path.join(scratch, "keras_home")
        os.mkdir(keras_home)
        env = dict(
            os.environ, KERAS_BACKEND=backend, KERAS_HOME=keras_home, TF_CPP_MIN_LOG_LEVEL="2"
        )
        if backend == "jax":
            env.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
            if "JAX_COMPILATION_CACHE_DIR" not in env:
                env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(scratch, "jax_cache")
                env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
                env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        count = workers(pytest_args)
        if count:
            pytest_args = ["-n", str(count), "--dist", "loadfile", "--no-loadscope-reorder",
                           *pytest_args]
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
        start = time.perf_counter()
        summary = ""
        with subprocess.Popen(
            [sys.executable, "-m", "pytest", *pytest_args],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
        ) as proc:
            try:
                for line in proc.stdout:
                    sys.stdout.write(line)
                    sys.stdout.flush()
                    if SUMMARY.search(line):
                        summary = line.strip().strip("=").strip()
                status = proc.wait()
            except KeyboardInterrupt:
                proc.terminate()
                proc.wait()
                raise
        elapsed = time.perf_counter() - start
    if status == 5:
        summary = (summary + "; " if summary else "") + "no tests collected"
    return status, summary or f"pytest exited with status {status}", elapsed


def main(argv):
    backends, pytest_args = parse_args(argv)
    pytest_args = absolutize(pytest_args)
    results = []
    try:
        for backend in backends:
            results.append((backend, *run_one(backend, pytest_args)))
    except KeyboardInterrupt:
        print("\nall_backends.py: interrupted.", file=sys.stderr)
        return 130

    width = max(len(b) for b in backends)
    print(f"\n{'=' * 30} summary {'=' * 30}")
    for backend, status, summary, elapsed in results:
        verdict = "ok  " if status == 0 else "FAIL"
        print(f"{verdict} {backend:<{width}}  {summary}  (wall {elapsed:.1f}s)")
    # One closing line for the whole run, in the form CI readers recognise.
    totals = {"passed": 0, "failed": 0, "skipped": 0}
    for _, status, summary, _ in results:
        for count, word in re.findall(r"(\d+) (passed|failed|errors?|skipped)", summary):
            key = "failed" if word.startswith("error") else word
            totals[key] += int(count)
        if status != 0 and not re.search(r"\d+ (failed|errors?)", summary):
            totals["failed"] += 1  # a crash or empty run counts as a failure
    print(f"total: {totals['passed']} passed, {totals['failed']} failed, "
          f"{totals['skipped']} skipped")
    failed = [b for b, status, _, _ in results if status != 0]
    if failed:
        print(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
