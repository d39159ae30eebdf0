"""Benchmark regression gate: the base revision and the working tree, measured in one job.

    python bench/regress.py [--base origin/main] [--fail median:25%] [-k EXPR]

A shared 2-core machine drifts by tens of percent between jobs and even between
minutes, so a baseline saved by another job is no reference.  This script
checks the base revision out into a temporary worktree, runs the selected
benchmarks there and here back to back (``--benchmark-autosave`` JSON under
.benchmarks/), and fails when any benchmark's median is slower than the base by
more than the threshold (pytest-benchmark's ``--benchmark-compare-fail``).
The default selection is the quick, stable part: the auto kernel on every
layer at batch 1 and the call overhead.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_cmd(tree, k, extra):
    return [sys.executable, "-m", "pytest", os.path.join(tree, "bench", "test_bench_layers.py"),
            "--benchmark-only", "-q", "-p", "no:cacheprovider", "-k", k,
            "--benchmark-storage", os.path.join(ROOT, ".benchmarks"), *extra]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", default="HEAD", help="revision to compare against (default HEAD)")
    ap.add_argument("--fail", default="median:25%", help="--benchmark-compare-fail expression")
    ap.add_argument("-k", default="(auto and b1) or overhead", help="pytest -k selection")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="fastconv-base-")
    wt = os.path.join(tmp, "base")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", wt, a.base], check=True,
                   capture_output=True)
    try:
        # the base's code must be what is measured: lay its package out as installed
        # (kernels/ inside fastconv/) and put it first on the path
        pkg = os.path.join(tmp, "pkg")
        shutil.copytree(os.path.join(wt, "fastconv"), os.path.join(pkg, "fastconv"))
        shutil.copytree(os.path.join(wt, "kernels"), os.path.join(pkg, "fastconv", "kernels"))
        env = dict(os.environ, PYTHONPATH=pkg, NUMBA_CACHE_DIR=os.path.join(tmp, "numba-cache"))
        base = subprocess.run(pytest_cmd(wt, a.k, ["--benchmark-save=base"]), env=env)
        if base.returncode:
            return base.returncode
        here = subprocess.run(pytest_cmd(ROOT, a.k, ["--benchmark-compare", "--benchmark-compare-fail",
                                                     a.fail, "--benchmark-save=head"]))
        return here.returncode
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", wt], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
