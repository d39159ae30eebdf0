"""End-to-end latency of a built-in model: fastconv vs PyTorch eager, same weights,
each in its own process with the same thread count.

    python bench/model_compare.py --model resnet18 --threads 2 --batch 1
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np


def child(runtime, threads, batch, repeat, model):
    from fastconv import models
    net = models.ZOO[model]()
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    if runtime == "torch":
        import torch
        torch.set_num_threads(threads)
        tnet = models.TORCH_ZOO[model]().eval()
        tnet.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in net.state_dict().items()})
        xt = torch.from_numpy(x)

        def run():
            with torch.no_grad():
                return tnet(xt)
    else:
        import fastconv as fc
        fc.set_num_threads(threads)
        fc.warmup(net, x)

        def run():
            return net(x)
    from fastconv._peers import timed
    print(json.dumps(list(timed(run, repeat))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--model", default="resnet_tiny")
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        return child(a.child, a.threads, a.batch, a.repeat, a.model)
    res = {}
    for rt in ("fastconv", "torch"):
        out = subprocess.run([sys.executable, __file__, "--child", rt, "--threads", str(a.threads),
                              "--batch", str(a.batch), "--repeat", str(a.repeat),
                              "--model", a.model],
                             capture_output=True, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS=str(a.threads)))
        if out.returncode:
            print(f"{rt} failed: {out.stderr[-1500:]}", file=sys.stderr)
            continue
        res[rt] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{a.model}, 224x224, batch {a.batch}, {a.threads} threads, "
          f"median (min) of {a.repeat}")
    for rt, (med, mn) in res.items():
        print(f"  {rt:9s} {med * 1e3:8.2f} ms ({mn * 1e3:.2f})")
    if len(res) == 2:
        print(f"  fastconv speed vs torch eager: {res['torch'][0] / res['fastconv'][0]:.2f}x")


if __name__ == "__main__":
    main()
