"""Is the second core there right now?  A compute-bound kernel (8 x 16 independent FMA
chains per task, no memory traffic) timed on one thread and on all of them, in
alternation, for a few seconds: the ratio is the parallel speedup the machine gives
at that moment.

    python bench/cores.py --seconds 20
    python bench/cores.py --gaps        # the cost of waking the pool after an idle gap
    python bench/cores.py --gaps --gap-steps 0     # ... for a call with no work at all

On a dedicated machine it reads ~N for N threads every time.  On the shared 2-vCPU
development VM it moves between 1.0x and 2.0x from one second to the next (the
host runs the second vCPU on a busy core in its slow phases), which is why the
benchmarks here time the runtimes in alternating rounds and quote same-run ratios.

``--handoff``: each sample also times how fast a thread reads 1 MiB that another thread has
just written against 1 MiB it wrote itself (the "handoff" ratio of
``fastconv.cli.measure_handoff``, which ``fastconv bench`` prints too).  A kernel whose
phases hand data from one thread to another (Winograd's
input transform, products and output transform; any layer reading the output of the one
before) pays that ratio.  On the development VM it reads ~1.0x (the two vCPUs share
their caches) and, in slow phases, 1.7-2.1x, while the compute speedup can stay at 1.95x:
the host has then placed the vCPUs where a modified line travels at memory speed, and
Winograd 64@56 at two threads reads 0.85-0.89 ms against 0.42-0.46 (one thread: 0.79).

    python bench/cores.py --seconds 30 --handoff

``--gaps``: a short parallel call (~20 us of work a thread; ``--gap-steps`` FMA steps,
0 for none) timed after the calling thread spun for a gap of 0 us .. 3 ms with the pool
idle: the pool's wake-up cost (its workers sleep after a while without work) as the
machine shows it.  Run it with ``NUMBA_THREADING_LAYER=omp`` for GNU OpenMP's pool.
"""
import argparse
import time

import numba
import numpy as np
from numba import njit, prange

import fastconv  # noqa: F401  (the threading layer fastconv runs on: TBB where installed)
from fastconv.cli import measure_handoff


@njit(parallel=True, fastmath=True, cache=True)
def fma_chains(tasks, steps, a, out):
    """out[t] = sum over 8 x 16 chains of acc <- acc * a[l] + a[16 + l], ``steps`` times."""
    for t in prange(tasks):
        acc = np.zeros((8, 16), np.float32)
        for _ in range(steps):
            for j in range(8):
                for lane in range(16):
                    acc[j, lane] = acc[j, lane] * a[lane] + a[16 + lane]
        out[t] = acc.sum()


def gaps(threads, a, out, steps):
    """Median / 90th percentile of a short call after each idle gap."""
    for gap_us in (0, 5, 8, 12, 20, 50, 100, 300, 1000, 3000):
        ts = []
        for _ in range(300):
            t1 = time.perf_counter()
            while time.perf_counter() - t1 < gap_us * 1e-6:
                pass
            t0 = time.perf_counter()
            fma_chains(threads, steps, a, out)
            ts.append(time.perf_counter() - t0)
        print(f"after {gap_us:5d} us idle: median {np.median(ts) * 1e6:6.1f} us, "
              f"90th percentile {np.percentile(ts, 90) * 1e6:6.1f} us")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--steps", type=int, default=100000, help="FMA steps per task")
    ap.add_argument("--gaps", action="store_true", help="time a short call after idle gaps")
    ap.add_argument("--gap-steps", type=int, default=200, help="FMA steps a task in --gaps")
    ap.add_argument("--handoff", action="store_true",
                    help="also time reading another thread's freshly written 1 MiB")
    args = ap.parse_args()
    threads = numba.config.NUMBA_NUM_THREADS
    a = (0.5 * np.random.default_rng(0).random(32)).astype(np.float32)
    out = np.zeros(threads)
    fma_chains(threads, 10, a, out)
    print(f"threading layer {numba.threading_layer()}, {threads} threads")
    if args.gaps:
        gaps(threads, a, out, args.gap_steps)
        return
    ratios, hands = [], []
    end = time.time() + args.seconds
    while time.time() < end:
        numba.set_num_threads(1)
        t0 = time.perf_counter()
        fma_chains(threads, args.steps, a, out)
        one = time.perf_counter() - t0
        numba.set_num_threads(threads)
        t0 = time.perf_counter()
        fma_chains(threads, args.steps, a, out)
        ratios.append(one / (time.perf_counter() - t0))
        line = f"{time.strftime('%H:%M:%S')}  {threads} threads: {ratios[-1]:.2f}x one thread"
        if args.handoff:
            own, other = measure_handoff(threads)
            hands.append(other / own)
            line += (f"; 1 MiB read {own * 1e6:.0f} us own, {other * 1e6:.0f} us another "
                     f"thread's: handoff {hands[-1]:.2f}x")
        print(line, flush=True)
        time.sleep(0.5)
    r = np.array(ratios)
    print(f"speedup over {len(r)} samples: median {np.median(r):.2f}x, "
          f"min {r.min():.2f}x, max {r.max():.2f}x (ideal {threads}x)")
    if hands:
        h = np.array(hands)
        print(f"handoff over {len(h)} samples: median {np.median(h):.2f}x, "
              f"min {h.min():.2f}x, max {h.max():.2f}x (1.0x where the threads share caches)")


if __name__ == "__main__":
    main()
