"""fastconv's CUDA kernels against PyTorch/cuDNN on the same GPU, in the same run.

    python bench/gpu_compare.py --batch 1 32            # layer tables, TF32 off and on
    python bench/gpu_compare.py --model resnet18 --batch 32
    NUMBA_ENABLE_CUDASIM=1 python bench/gpu_compare.py --smoke   # no GPU: one tiny layer

Layers: the ResNet-50 and MobileNetV2 tables of bench/shapes.py.  Inputs and
weights live on the device for both runtimes (fastconv gets torch CUDA tensors
through ``__cuda_array_interface__``, zero copy), each call is synchronized
before the clock stops, medians of ``--repeat`` calls after warm-up.  PyTorch
runs with ``torch.backends.cudnn.allow_tf32 = False`` (fp32 fairness) and, in a
second column, True.  Every fastconv result is checked against the CPU backend
(max relative error printed; the target is 1e-4).
"""
import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from shapes import LAYERS, flops  # noqa: E402

SMOKE = {"smoke_3x3": (4, 6, 6, 8, 3, 1, 1, 1)}


def _time(fn, sync, repeat):
    for _ in range(3):
        fn()
    sync()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _layer(spec, batch, seed=0):
    c, h, w, k, r, s, p, g = spec
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c // g, r, r)) / np.sqrt(c // g * r * r)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    return x, wt, b


def layers(args):
    import fastconv as fc
    from numba import cuda
    try:
        import torch
        has_torch = torch.cuda.is_available()
    except ImportError:
        has_torch = False
    table = SMOKE if args.smoke else LAYERS
    print(f"GPU: {cuda.get_current_device().name if not args.smoke else 'CUDA simulator'}; "
          f"median of {args.repeat}; ms (GFLOP/s)")
    print("| layer | batch | fastconv cuda | cuDNN fp32 | cuDNN TF32 | vs fp32 | vs TF32 | "
          "max rel err vs CPU |")
    print("|---|---|---|---|---|---|---|---|")
    for batch in args.batch:
        for name, spec in table.items():
            c, h, w, k, r, s, p, g = spec
            x, wt, b = _layer(spec, batch)
            packed = {}
            xd = cuda.to_device(x)
            ref = fc.conv2d(x, wt, b, s, p, 1, g, backend="cpu")
            y = fc.conv2d(xd, wt, b, s, p, 1, g, packed=packed, backend="cuda").copy_to_host()
            err = float(np.abs(y - ref).max() / max(1.0, np.abs(ref).max()))
            t_fc = _time(lambda: fc.conv2d(xd, wt, b, s, p, 1, g, packed=packed, backend="cuda"),
                         cuda.synchronize, args.repeat)
            fl = flops(spec, batch)
            row = f"| {name} | {batch} | {t_fc * 1e3:.3f} ({fl / t_fc / 1e9:.0f}) |"
            if has_torch:
                xt = torch.from_numpy(x).cuda()
                wtt = torch.from_numpy(wt).cuda()
                bt = torch.from_numpy(b).cuda()
                times = []
                for tf32 in (False, True):
                    torch.backends.cudnn.allow_tf32 = tf32
                    with torch.no_grad():
                        times.append(_time(lambda: torch.nn.functional.conv2d(xt, wtt, bt, s, p,
                                                                              1, g),
                                           torch.cuda.synchronize, args.repeat))
                row += (f" {times[0] * 1e3:.3f} | {times[1] * 1e3:.3f} | "
                        f"{times[0] / t_fc:.2f}x | {times[1] / t_fc:.2f}x |")
            else:
                row += " | | | |"
            print(row + f" {err:.1e} |")


def model(args):
    import fastconv as fc
    import torch
    from numba import cuda

    from fastconv import models
    for batch in args.batch:
        x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
        twin = models.torch_twin(args.model)
        cpu = fc.optimize(fc.from_torch(twin, x[:1]), x[:1])
        gpu = fc.optimize(fc.from_torch(twin, x[:1]), x[:1], backend="cuda")
        xt = torch.from_numpy(x).cuda()
        err = float(np.abs(gpu(x) - cpu(x)).max() / np.abs(cpu(x)).max())
        t_fc = _time(lambda: gpu(xt), cuda.synchronize, args.repeat)
        tw = twin.cuda()
        res = []
        for tf32 in (False, True):
            torch.backends.cudnn.allow_tf32 = tf32
            with torch.no_grad():
                res.append(_time(lambda: tw(xt), torch.cuda.synchronize, args.repeat))
        print(f"{args.model} batch {batch}: fastconv cuda {t_fc * 1e3:.2f} ms, PyTorch eager "
              f"{res[0] * 1e3:.2f} ms (TF32 {res[1] * 1e3:.2f}): {res[0] / t_fc:.2f}x "
              f"({res[1] / t_fc:.2f}x); host fallbacks {gpu.device_fallbacks}; "
              f"max rel err vs CPU {err:.1e}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--model", help="a zoo model for the end-to-end comparison")
    ap.add_argument("--smoke", action="store_true", help="one tiny layer (the CUDA simulator)")
    args = ap.parse_args()
    if args.smoke:
        args.batch, args.repeat = [1], 1
    return model(args) if args.model else layers(args)


if __name__ == "__main__":
    main()
