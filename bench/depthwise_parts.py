"""One thread's time for each part of the int8 depthwise kernel's 16-channel blocks
(kernels/cpu/depthwise_int8.py, depthwise_int8_blocked) on one block, hot, against the
whole kernel on the same map: the conversion of the input planes into padded pixel vectors
(nchwc.to_blocked_int), the row kernels (depthwise.blocked_row), and the finish back into
requantized uint8 channel rows with relu6 (int8.finish_out).

    python bench/depthwise_parts.py                      # MobileNetV2's large maps
    python bench/depthwise_parts.py --maps 112:1 56:2

Each part: best of 7 rounds of 50 passes over the whole block from one @njit loop.  The
kernel: medians of 200 calls (after ``_peers.timed``'s warm-up) of a 64-channel layer
(four blocks) at one thread, divided by its blocks; what it takes beyond the three parts
is the time between them (the buffers' way through the caches, the per-band bookkeeping,
the call).
"""
import argparse
import time

import numpy as np
from numba import njit

import fastconv as fc
from fastconv import _algorithms
from fastconv._peers import timed
from fastconv.kernels.cpu.depthwise import blocked_row
from fastconv.kernels.cpu.int8 import finish_out
from fastconv.kernels.cpu.nchwc import to_blocked_int

V = 16


@njit(cache=False)
def _convert(reps, x, HW, plane, offs):
    for _ in range(reps):
        for f0 in range(0, HW, V):
            f = max(0, min(f0, HW - V))
            to_blocked_int(x, f, HW, V, plane, offs, f, np.float32(3.0))


@njit(cache=False)
def _rows(reps, plane, wb, bv, ob, OH, OW, sh, WP):
    for _ in range(reps):
        for p in range(OH):
            blocked_row(plane, p * sh * WP * V, WP * V, sh, 1, 3, OW, wb, bv, 0, ob, p * OW * V)


@njit(cache=False)
def _finish(reps, ob, yq, OHW, sv, sb):
    for _ in range(reps):
        for f0 in range(0, OHW, V):
            f = max(0, min(f0, OHW - V))
            finish_out(ob, f * V, yq, f, OHW, V, sv, sb, 2, np.float32(20.0), np.float32(3.0),
                       np.float32(0.0), np.float32(255.0))


def _best(f, args, reps=50):
    f(1, *args)
    best = float("inf")
    for _ in range(7):
        t0 = time.perf_counter()
        f(reps, *args)
        best = min(best, (time.perf_counter() - t0) / reps)
    return best


def _kernel_per_block(hw, sh, channels=64, calls=200):
    rng = np.random.default_rng(0)
    xq = rng.integers(0, 256, (1, channels, hw, hw), dtype=np.uint8)
    wq = rng.integers(-127, 128, (channels, 1, 3, 3), dtype=np.int8)
    sw = np.full(channels, 1e-3, np.float32)
    pk = {}

    def call():
        fc.int8_conv2d(xq, 0.02, 3, wq, sw, None, sh, 1, groups=channels, activation="relu6",
                       out_scale=0.05, out_dtype="uint8", packed=pk)
    return timed(call, calls)[0] / (channels // V)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--maps", nargs="+", default=["112:1", "112:2", "56:1", "56:2"],
                    help="SIZE:STRIDE, 3x3 filters, padding 1")
    args = ap.parse_args()
    fc.set_num_threads(1)
    rng = np.random.default_rng(0)
    print("one 16-channel block, one thread (us): convert / rows / finish, their sum; "
          "the kernel a block")
    for spec in args.maps:
        hw, sh = (int(v) for v in spec.split(":"))
        HP = WP = hw + 2
        OH = OW = (hw + 2 - 3) // sh + 1
        x = rng.integers(0, 256, V * hw * hw).astype(np.uint8)
        offs = _algorithms._blocked_offsets(hw, hw, 1, 1, WP)
        plane = np.zeros(HP * WP * V, np.float32)
        ob = np.zeros(OH * OW * V, np.float32)
        wb = rng.integers(-127, 128, (9, V)).astype(np.float32)
        bv = np.zeros(V, np.float32)
        yq = np.zeros(V * OH * OW, np.uint8)
        sv = np.full(V, 0.01, np.float32)
        sb = np.zeros(V, np.float32)
        parts = [_best(_convert, (x, hw * hw, plane, offs)),
                 _best(_rows, (plane, wb, bv, ob, OH, OW, sh, WP)),
                 _best(_finish, (ob, yq, OH * OW, sv, sb))]
        whole = _kernel_per_block(hw, sh)
        print(f"{hw}x{hw} stride {sh}: " + " / ".join(f"{t * 1e6:.1f}" for t in parts)
              + f", sum {sum(parts) * 1e6:.1f}; kernel {whole * 1e6:.1f}")


if __name__ == "__main__":
    main()
