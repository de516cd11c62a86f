"""The Quickstart on PyTorch at each CPU thread setting, beside other processes' demand for the cores.

    python benchmarks/torch_threads.py --epochs 5 --repeats 1

Runs `examples/gan_digits.py` (the README's Quickstart, shortened to
`--epochs`; from 4 epochs its fit runs the traced step, as the full 40-epoch
run does) in a fresh process per setting, with `KERAS_BACKEND=torch`:

- `default`: PyTorch's own thread count (one per core), written into
  `OMP_NUM_THREADS` so that the zoo leaves it alone;
- `one`: `OMP_NUM_THREADS=1`;
- `zoo`: `OMP_NUM_THREADS` unset, so the example applies
  `zoo.core.threads.limit_torch_threads` (threads only on idle cores).

Settings alternate within each repeat. For every run it prints the epochs
finished (all, or how many before `--timeout` stopped it), the fit's
seconds (as the example reports them), the process's whole wall time, the
CPU seconds the process used (user + system: threads that spin-wait burn
CPU without progress), and what other processes asked of the cores while
it ran, the input of the zoo's rule: the system's 1-minute count of
runnable tasks at start (`os.getloadavg()`, what the rule reads) and the
mean number of runnable tasks sampled from /proc/loadavg every half second,
less the run's own computing threads and this process (which count there
too). `--json` writes the same rows with the hardware and versions,
`--markdown` a table of them.
"""

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time

import _markdown

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "gan_digits.py")
SETTINGS = ("default", "one", "zoo")


def runnable_tasks():
    """Runnable scheduling entities right now (4th field of /proc/loadavg)."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return None


def default_threads():
    code = "import torch; print(torch.get_num_threads())"
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    return int(subprocess.run([sys.executable, "-c", code], env=env, check=True,
                              capture_output=True, text=True).stdout)


def run_once(setting, epochs, threads, timeout):
    env = dict(os.environ, KERAS_BACKEND="torch", PYTHONUNBUFFERED="1")
    env.pop("OMP_NUM_THREADS", None)
    if setting == "default":
        env["OMP_NUM_THREADS"] = str(threads)
    elif setting == "one":
        env["OMP_NUM_THREADS"] = "1"
    samples, done = [], threading.Event()

    def sample():
        while not done.wait(0.5):
            samples.append(runnable_tasks())

    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, EXAMPLE, "--epochs", str(epochs), "--verbose", "2",
                   "--out", os.path.join(tmp, "grid.png")]
        runnable_start = os.getloadavg()[0]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        try:
            result = subprocess.run(command, env=env, capture_output=True, text=True,
                                    timeout=timeout, cwd=ROOT)
            output, status = result.stdout + result.stderr, result.returncode
        except subprocess.TimeoutExpired as error:
            output = error.stdout or ""
            output = output.decode(errors="replace") if isinstance(output, bytes) else output
            status = "timeout"
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    fit = re.search(r"epochs in ([\d.]+) s, digits FID ([\d.]+)", output)
    # Keras's verbose=2 line per finished epoch, "29/29 - 3s - 97ms/step - ...".
    epochs_done = len(re.findall(r"^\d+/\d+ - ", output, re.M))
    used = [s for s in samples if s is not None]
    note = next((line for line in output.splitlines() if line.startswith("PyTorch:")), "")
    # The run's own threads count as runnable too: as many as compute at a
    # time (`one`: 1; `zoo`: the count its note gives, if it lowered it), and
    # so does this process, running while it reads /proc/loadavg.
    lowered = re.match(r"PyTorch: (\d+) CPU thread", note)
    own = 1 + (1 if setting == "one" else int(lowered.group(1)) if lowered else threads)
    return {
        "setting": setting,
        "status": status,
        "fit_s": float(fit.group(1)) if fit else None,
        "fid": float(fit.group(2)) if fit else None,
        "epochs_done": epochs_done,
        "wall_s": round(wall, 1),
        "cpu_s": round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 1),
        "runnable_1min_at_start": round(runnable_start, 2),
        "runnable_mean": round(sum(used) / len(used), 2) if used else None,
        "others_runnable_mean": round(max(0.0, sum(used) / len(used) - own), 2) if used else None,
        "zoo_note": note,
        "tail": "" if status == 0 else output[-2000:],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5,
                        help="epochs of the Quickstart per run (default 5, 145 steps)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--settings", default=",".join(SETTINGS),
                        help=f"some of {', '.join(SETTINGS)}, comma-separated")
    parser.add_argument("--timeout", type=float, default=180,
                        help="seconds after which a run is stopped and reported as such")
    parser.add_argument("--json", help="also write the rows and the machine to this file")
    parser.add_argument("--markdown", help="also write a Markdown table of the runs, "
                        "with the command, hardware and versions, to this file")
    args = parser.parse_args(argv)
    settings = args.settings.split(",")
    if not settings or set(settings) - set(SETTINGS):
        parser.error(f"--settings: expected some of {', '.join(SETTINGS)}; "
                     f"received {args.settings!r}")
    if args.epochs < 1 or args.repeats < 1 or args.timeout <= 0:
        parser.error("--epochs, --repeats and --timeout must be positive")

    from importlib.metadata import version

    threads = default_threads()
    machine = {
        "cpu": _markdown.cpu_name(),
        "cores_available": len(os.sched_getaffinity(0)),
        "torch_default_threads": threads,
        "python": platform.python_version(),
        "torch": version("torch"),
        "keras": version("keras"),
        "command": " ".join(["python", "benchmarks/torch_threads.py", *(argv or sys.argv[1:])]),
    }
    print(", ".join(f"{k} {v}" for k, v in machine.items() if k != "command"))
    header = ("setting", "status", "epochs_done", "fit_s", "wall_s", "cpu_s", "fid",
              "runnable_1min_at_start", "others_runnable_mean")
    print(" | ".join(header))
    rows = []
    for _ in range(args.repeats):
        for setting in settings:
            row = run_once(setting, args.epochs, threads, args.timeout)
            rows.append(row)
            print(" | ".join(str(row[k]) for k in header), flush=True)
            if row["zoo_note"]:
                print("   ", row["zoo_note"])
            if row["tail"]:
                print(row["tail"], file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "epochs": args.epochs, "rows": rows}, f, indent=2)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown(machine, args, rows))


def markdown(machine, args, rows):
    names = {"default": f"PyTorch's default ({machine['torch_default_threads']} threads)",
             "one": "`OMP_NUM_THREADS=1`", "zoo": "unset: the zoo's rule"}
    lines = [
        f"`{machine['command']}` on {machine['cores_available']} cores of an "
        f"{machine['cpu']}, Python {machine['python']}, PyTorch {machine['torch']}, "
        f"Keras {machine['keras']}; {args.epochs} epochs per run, each stopped after "
        f"{args.timeout:.0f} s.",
        "",
        "| threads | epochs done | fit (s) | process wall (s) | process CPU (s) "
        "| other runnable tasks (mean) | runnable tasks at start (1-minute mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        fit = f"{row['fit_s']:.1f}" if row["fit_s"] is not None else f"stopped at {args.timeout:.0f}"
        lines.append(
            f"| {names[row['setting']]} | {row['epochs_done']} of {args.epochs} | {fit} "
            f"| {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['others_runnable_mean']} "
            f"| {row['runnable_1min_at_start']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
