"""Inverted residual blocks as one call (``functional.inverted_residual``) against their
three convolutions called one by one, taking turns in one process.

    python bench/ir_compare.py --rounds 40

Blocks with 7x7 depthwise convs (MixNet/ConvNeXt-style) and a MobileNetV2 3x3 one for
scale: expansion 1x1 + ReLU6, depthwise + ReLU6, projection 1x1 + the block's input;
prints the medians and what inverted_residual runs (as fc.explain names it).  The three
calls write into buffers kept between calls, as a model's plan does (with a new output
each call, their page faults had made them look up to 4x slower).  Batch 1
and two threads unless given.
"""
import argparse

import numpy as np
from shape_sweep import turns

# C, map, expanded channels, depthwise size
BLOCKS = ((40, 28, 240, 7), (80, 14, 480, 7), (24, 56, 144, 7), (40, 28, 240, 3))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=40)
    a = ap.parse_args()
    import fastconv as fc
    from fastconv import functional as F
    fc.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    for c, hw, k, r in BLOCKS:
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        we = (rng.standard_normal((k, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        wd = (rng.standard_normal((k, 1, r, r)) / r).astype(np.float32)
        wp = (rng.standard_normal((c, k, 1, 1)) / np.sqrt(k)).astype(np.float32)
        be, bd, bp = (rng.standard_normal(m).astype(np.float32) for m in (k, k, c))
        packs = [{}, {}, {}, {}]

        def fused():
            return F.inverted_residual(x, (we, be, "relu6"), (wd, bd, "relu6", 1, r // 2, 1),
                                       (wp, bp, None), residual=x, packed=packs[0])

        z, d, y = (np.empty(shape, np.float32) for shape in ((1, k, hw, hw), (1, k, hw, hw),
                                                             x.shape))

        def separate():  # into buffers kept between calls, as a model's plan keeps them
            fc.conv2d(x, we, be, activation="relu6", packed=packs[1], out=z)
            fc.conv2d(z, wd, bd, 1, r // 2, 1, k, activation="relu6", packed=packs[2], out=d)
            return fc.conv2d(d, wp, bp, residual=x, packed=packs[3], out=y)
        err = float(np.abs(fused() - separate()).max())
        med = turns({"fused": fused, "separate": separate}, a.rounds)
        kind = F.inverted_residual_kernel(x.shape, we.shape, wd.shape, 1, r // 2, 1, wp.shape)
        print(f"{c}->{k}->{c} @ {hw}, depthwise {r}x{r}: one call {med['fused'] * 1e6:.0f} us "
              f"({kind}), three {med['separate'] * 1e6:.0f} us; largest difference {err:.1e}",
              flush=True)


if __name__ == "__main__":
    main()
