"""Transposed convolutions (U-Net's 2x2/2 upsampling, DCGAN's 4x4/2, FCN's 3x3/2 with output
padding, a stride-1 3x3): fastconv as it plans them (one conv2d per output phase, or
col2im), fastconv forced onto col2im, and ``torch.nn.functional.conv_transpose2d``, taking
turns in one process (two threads each), batch 1:

    python bench/convt_sweep.py --rounds 5

Prints a Markdown row per layer: us, medians over the rounds' turns (shape_sweep.turns: 5
untimed calls, then 30 timed), the col2im time over the planned one, PyTorch's over the planned one, and the largest
difference from PyTorch's output relative to its scale.
"""
import argparse

import numpy as np
from shape_sweep import turns

import fastconv as fc
from fastconv import functional as F

# name: (C, K, H, kernel, stride, padding, output_padding)
LAYERS = {
    "unet 512->256 2x2/2 @28": (512, 256, 28, 2, 2, 0, 0),
    "unet 256->128 2x2/2 @56": (256, 128, 56, 2, 2, 0, 0),
    "unet 128->64 2x2/2 @112": (128, 64, 112, 2, 2, 0, 0),
    "dcgan 512->256 4x4/2 @8": (512, 256, 8, 4, 2, 1, 0),
    "dcgan 256->128 4x4/2 @16": (256, 128, 16, 4, 2, 1, 0),
    "dcgan 128->64 4x4/2 @32": (128, 64, 32, 4, 2, 1, 0),
    "dcgan 64->3 4x4/2 @64": (64, 3, 64, 4, 2, 1, 0),
    "fcn 256->128 3x3/2 @28, output padding 1": (256, 128, 28, 3, 2, 1, 1),
    "3x3/1 64->64 @56": (64, 64, 56, 3, 1, 1, 0),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    fc.set_num_threads(2)
    rng = np.random.default_rng(0)
    print("| layer | fastconv (plan) | col2im | PyTorch | col2im / planned | PyTorch / planned "
          "| difference |")
    print("|---|---|---|---|---|---|---|")
    for name, (c, k, h, r, s, p, op) in LAYERS.items():
        x = rng.standard_normal((1, c, h, h), dtype=np.float32)
        w = (rng.standard_normal((c, k, r, r)) * 0.05).astype(np.float32)
        xt, wt = torch.from_numpy(x), torch.from_numpy(w)
        planned, forced, threshold = {}, {}, F.CONVT_PHASES_MIN_CHANNELS
        with torch.no_grad():
            want = torch.nn.functional.conv_transpose2d(xt, wt, None, s, p, op).numpy()
        got = fc.conv_transpose2d(x, w, None, s, p, op, packed=planned)
        err = float(np.abs(got - want).max() / np.abs(want).max())

        def col2im():
            F.CONVT_PHASES_MIN_CHANNELS = 1 << 30
            try:
                fc.conv_transpose2d(x, w, None, s, p, op, packed=forced)
            finally:
                F.CONVT_PHASES_MIN_CHANNELS = threshold

        def peer():
            with torch.no_grad():
                torch.nn.functional.conv_transpose2d(xt, wt, None, s, p, op)

        m = {key: v * 1e6 for key, v in turns(
            {"plan": lambda: fc.conv_transpose2d(x, w, None, s, p, op, packed=planned),
             "col2im": col2im, "torch": peer}, a.rounds, burst=30, warm=5).items()}
        kernel = F.conv_transpose_kernel(x.shape, w.shape, s, (p,) * 4, op, 1, 1)
        print(f"| {name} | {m['plan']:.0f} ({kernel}) | {m['col2im']:.0f} | {m['torch']:.0f} "
              f"| {m['col2im'] / m['plan']:.2f}x | {m['torch'] / m['plan']:.2f}x | {err:.1e} |",
              flush=True)


if __name__ == "__main__":
    main()
