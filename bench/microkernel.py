"""Single-threaded GFLOP/s of the fp32 micro-kernel tiles (kernels/cpu/zmm.py), called in a
loop from one @njit function, so nothing but the tile is timed:

    python bench/microkernel.py --steps 1024 --ldx 196     # 1x1 over 1024 channels at 14x14
    python bench/microkernel.py --steps 1                  # the store's cost

"t": gemm_tile_t_store (7 pixels x 32 channels, the inputs read ldx apart), "n": gemm_tile
(8 channels x 32 pixels).  Best of 7 rounds of 20000 calls.
"""
import argparse
import time

import numpy as np
from numba import njit

from fastconv.kernels.cpu import zmm


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=128, help="reduction steps per tile")
    ap.add_argument("--ldx", type=int, default=zmm.MP, help="input row stride (floats)")
    a = ap.parse_args()
    nc, ldx, MP, NR, MR = a.steps, a.ldx, zmm.MP, zmm.NR, zmm.MR

    @njit(cache=False)
    def run_t(x, wp, y, b, reps):
        for _ in range(reps):
            zmm.gemm_tile_t_store(x, 0, ldx, wp, 0, nc, y, 0, 8, NR, MP, b, 0, 0, y, 0, 0, 1, 0,
                                      NR)

    @njit(cache=False)
    def run_n(a, x, y, b, reps):
        for _ in range(reps):
            zmm.gemm_tile(a, 0, MR, x, 0, NR, nc, y, 0, NR, 0, b, 0, 0, y, 0, 1, 0)

    rng = np.random.default_rng(0)
    x = rng.random(nc * max(ldx, NR) + 64).astype(np.float32)
    wp = rng.random(nc * NR).astype(np.float32)
    y = np.zeros(NR * 64, np.float32)
    b = np.zeros(64, np.float32)
    print(f"vector lanes {zmm.VW}, {zmm.REGISTERS} registers, {nc} steps, ldx {ldx}")
    for name, f, args, flops in (("t 7x32", run_t, (x, wp, y, b), 2 * MP * NR * nc),
                                 ("n 8x32", run_n, (wp, x, y, b), 2 * MR * NR * nc)):
        f(*args, 10)
        best = float("inf")
        for _ in range(7):
            t0 = time.perf_counter()
            f(*args, 20000)
            best = min(best, time.perf_counter() - t0)
        print(f"{name}: {flops * 20000 / best / 1e9:.1f} GFLOP/s, "
              f"{best / 20000 * 1e9:.0f} ns a tile")


if __name__ == "__main__":
    main()
