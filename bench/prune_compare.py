"""A whole model pruned by fc.prune, unstructured, in 4-channel blocks and in blocks of 4
output channels x whole filters (``whole_filters=True``: its 3x3 layers on the sparse
Winograd kernel), against the dense model, in one process with the variants alternating
(so the machine's phases hit them alike).

    python bench/prune_compare.py --model resnet50 --rounds 8
    python bench/prune_compare.py --model resnet50 --amounts 0.5,0.7 --blocks 4,4f

Prints each variant's kernels (how many layers run dense, CSR, block CSR, sparse Winograd)
and its median and minimum latency over the rounds (batch 1, 224x224, 2 threads unless
--threads).
"""
import argparse
import time

import numpy as np

import fastconv as fc
from fastconv import models


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="resnet50", choices=["resnet18", "resnet50", "vgg"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--amounts", default="0.5,0.7,0.9")
    ap.add_argument("--blocks", default="1,4,4f",
                    help="1 unstructured, 4 blocks of one tap, 4f blocks of whole filters")
    a = ap.parse_args()
    import torch
    fc.set_num_threads(a.threads)
    torch.set_num_threads(a.threads)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    dense = fc.optimize(fc.from_torch(getattr(models, a.model + "_torch")().eval(), x), x)
    variants = {"dense": dense}
    for amount in (float(v) for v in a.amounts.split(",")):
        for block in a.blocks.split(","):
            variants[f"{amount:.0%} block {block}"] = fc.prune(
                dense, amount, block=int(block.rstrip("f")), whole_filters=block.endswith("f"),
                example_input=x)
    for v in variants.values():
        v(x)
        v(x)
    times = {k: [] for k in variants}
    for _ in range(a.rounds):
        for k, v in variants.items():
            t0 = time.perf_counter()
            for _ in range(3):
                v(x)
            times[k].append((time.perf_counter() - t0) / 3)
    base = np.median(times["dense"])
    print(f"{a.model}, batch 1, {a.threads} threads, {a.rounds} rounds x 3 calls")
    print("| variant | layers: kernel | median ms | min ms | vs dense |")
    print("|---|---|---|---|---|")
    for k, v in variants.items():
        kinds = {}
        for r in getattr(v, "prune_report", []):
            kinds[r["kernel"]] = kinds.get(r["kernel"], 0) + 1
        desc = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items())) or "all dense"
        med = np.median(times[k])
        print(f"| {k} | {desc} | {med * 1e3:.2f} | {np.min(times[k]) * 1e3:.2f} | "
              f"{base / med:.2f}x |")


if __name__ == "__main__":
    main()
