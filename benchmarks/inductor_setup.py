"""TorchInductor's one-time setup, apart from any model's compilation.

    python benchmarks/inductor_setup.py --repeats 3

The "first step" of PyTorch's compiled step (`step_time.py --jit-compile
true`, `long_fit.py`) is measured with an empty `TORCHINDUCTOR_CACHE_DIR`.
Part of that time is not the model's: Inductor's first compilation in a
process imports and initializes its compiler, and its first compilation
into an empty cache folder also builds and loads small test programs to pick
the CPU's vector instructions (`torch._inductor.cpu_vec_isa`). This times
the compilation of a tiny function (a `make_fx` graph compiled by
`torch._inductor.compile`, as `zoo/core/torch_step.py` does) in fresh
processes: into an empty cache folder, into a used one, and a second such
function in the same process. Each compiled function differs (a different
constant), so no compilation is a cache hit. Needs only PyTorch.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile

import _markdown

CHILD = """
import sys, time
import torch
from torch.fx.experimental.proxy_tensor import make_fx

def seconds(k):
    start = time.perf_counter()
    f = lambda x: (torch.sin(x) * k + 1.0).sum()
    x = torch.randn(64)
    compiled = torch._inductor.compile(make_fx(f)(x), [x])
    compiled(x)
    return time.perf_counter() - start

k = float(sys.argv[1])
print(seconds(k), seconds(k + 0.5))
"""


def compile_times(cache_dir, k):
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    run = subprocess.run(
        [sys.executable, "-c", CHILD, str(k)], env=env, capture_output=True, text=True
    )
    if run.returncode:
        raise RuntimeError(f"the timing process failed:\n{run.stderr}")
    first, second = run.stdout.split()
    return float(first), float(second)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    _markdown.add_argument(parser)
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be positive, got {args.repeats}")
    import torch

    print(
        f"torch {torch.__version__}, {platform.machine()}, {os.cpu_count()} CPUs\n"
    )
    empty, used, second = [], [], []
    with tempfile.TemporaryDirectory() as root:
        used_dir = os.path.join(root, "used")
        compile_times(used_dir, 0.0)  # fills it: the vector-instruction checks
        for r in range(args.repeats):
            # Interleaved; each run compiles functions no earlier run compiled.
            first, again = compile_times(os.path.join(root, f"empty{r}"), 1.0 + r)
            empty.append(first)
            second.append(again)
            used.append(compile_times(used_dir, 100.0 + r)[0])
    table = (
        "| first compilation in a process, cache folder empty (s) | cache folder used (s) "
        "| a second compilation in the process (s) |\n|---|---|---|\n"
        f"| {statistics.median(empty):.1f} | {statistics.median(used):.1f} "
        f"| {statistics.median(second):.2f} |"
    )
    print(table)
    _markdown.write(args.markdown, "TorchInductor's one-time setup", table,
                    notes=f"Medians of {args.repeats} interleaved repeats.")


if __name__ == "__main__":
    main()
