"""One thread's rate of the VNNI conv's in-place-tap blocks (kernels/cpu/vnni.py) on a hot
3x3 window: eight pixels, seven pixels, and seven with both row ends' padding taps left
out, 32 output channels, ``--channels`` input channels.

    python bench/vnni_blocks.py --channels 128
    python bench/vnni_blocks.py --channels 256

Best of 7 rounds of 20000 calls from one @njit loop; G/s counts the vpdpbusd issued.
"""
import argparse
import time

import numpy as np
from numba import njit

from fastconv.kernels.cpu.vnni import HAS_VNNI, taps7x32_cols_epi, taps8x32_epi


@njit(cache=False)
def _eight(reps, xq, pix, toff, nqt, wp, y, zw, sc, b, zc, mf, ml):
    for _ in range(reps):
        taps8x32_epi(xq, pix, 0, toff, 9, nqt, wp, 0, 9 * nqt * 64, y, 0, 64, 8, 32, zw, sc, b,
                     0, 0, y, 0)


@njit(cache=False)
def _seven(reps, xq, pix, toff, nqt, wp, y, zw, sc, b, zc, mf, ml):
    for _ in range(reps):
        taps7x32_cols_epi(xq, pix, 0, toff, 9, nqt, wp, 0, 9 * nqt * 64, y, 0, 64, 7, 32, zw,
                          sc, b, 0, 0, y, 0, mf, ml, zc, zc, 0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", type=int, default=128)
    c = ap.parse_args().channels
    if not HAS_VNNI:
        raise SystemExit("this CPU has no AVX-512 VNNI")
    rng = np.random.default_rng(0)
    w = 30   # a padded 30 x 30 channels-last map
    xq = rng.integers(0, 255, w * w * c + 64, dtype=np.uint8)
    nqt = c // 4
    toff = np.array([(r * w + s) * c for r in range(3) for s in range(3)], np.int64)
    wp = rng.integers(-127, 127, 2 * 9 * nqt * 64 + 64, dtype=np.int8)
    pix = np.array([j * c for j in range(8)], np.int64)
    y = np.zeros(64 * 64, np.float32)
    zw, zc = np.zeros(64, np.int32), np.zeros(64, np.int32)
    sc, b = np.ones(64, np.float32), np.zeros(64, np.float32)
    left, right = 1 | 1 << 3 | 1 << 6, 1 << 2 | 1 << 5 | 1 << 8   # kernel columns 0 and 2
    for name, f, mf, ml, products in (("8 pixels", _eight, 0, 0, 8 * 9),
                                      ("7 pixels", _seven, 0, 0, 7 * 9),
                                      ("7 pixels, both ends", _seven, left, right, 7 * 9 - 6)):
        args = (xq, pix, toff, nqt, wp, y, zw, sc, b, zc, mf, ml)
        f(10, *args)
        best = float("inf")
        for _ in range(7):
            t0 = time.perf_counter()
            f(20000, *args)
            best = min(best, time.perf_counter() - t0)
        n = products * 2 * nqt * 20000
        print(f"{c} channels, {name}: {best / 20000 * 1e9:.0f} ns a block, "
              f"{n / best / 1e9:.2f} G vpdpbusd/s")


if __name__ == "__main__":
    main()
