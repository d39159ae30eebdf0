"""Train the small CNN the compression tests use, on scikit-learn's 8x8 digits (no download).

    python scripts/train_digits.py        # needs torch and scikit-learn; ~1 minute on 2 cores

Writes tests/data/digits.npz (the held-out test split, a calibration split),
tests/data/digits_cnn.npz (float weights, torch state-dict names) and
tests/data/digits_cnn_pruned.npz (90 % of the conv/linear weights pruned by
global magnitude, then fine-tuned with the mask fixed) and
tests/data/digits_cnn_pruned_block4.npz (the float weights pruned to 90 % in
blocks of 4 output channels at one tap or input feature, the smallest
root-mean-square blocks first as ``fc.prune(..., block=4)`` does, then fine-tuned
the same way) and tests/data/digits_cnn_pruned_filters4.npz (pruned to 70 % with each
conv block 4 output channels x one input channel's whole 3x3 filter, as ``fc.prune(...,
block=4, whole_filters=True)``: at 90 % such coarse blocks cost this net 3.3 points).
Seeds are fixed; the accuracies it prints are recorded in docs/performance.md.
"""
import json
import os

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "data")
SEED = 0


def net():
    tnn = torch.nn

    def block(cin, cout):
        return [tnn.Conv2d(cin, cout, 3, padding=1, bias=False), tnn.BatchNorm2d(cout), tnn.ReLU()]
    return tnn.Sequential(*block(1, 16), *block(16, 32), tnn.MaxPool2d(2), *block(32, 64),
                          *block(64, 64), tnn.AdaptiveAvgPool2d(1), tnn.Flatten(),
                          tnn.Linear(64, 64), tnn.ReLU(), tnn.Linear(64, 10))


def accuracy(model, x, y):
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean()) * 100


def train(model, x, y, epochs, lr, masks=None):
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(SEED)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            xb = x[idx]
            # light augmentation: shift by up to one pixel
            dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if masks:
                with torch.no_grad():
                    for p, m in masks.items():
                        p.mul_(m)
        sched.step()


def block_masks(weights, amount, kb=4, whole_filters=False):
    """Masks zeroing the blocks of kb consecutive output channels (rows) at one column (with
    whole_filters, a conv's columns of one input channel's whole filter) with the smallest
    root-mean-square, globally, until ``amount`` of the weights are zero."""
    scores, counts, spans = [], [], []
    for w in weights:
        span = int(w[0, 0].numel()) if whole_filters and w.dim() == 4 else 1
        wm = w.detach().reshape(w.shape[0], -1, span).double()
        kr = -(-w.shape[0] // kb)
        sq = torch.zeros((kr * kb,) + wm.shape[1:], dtype=torch.float64)
        sq[:w.shape[0]] = wm * wm
        count = torch.clamp(w.shape[0] - torch.arange(kr) * kb, max=kb).double() * span
        scores.append((sq.reshape(kr, kb, -1, span).sum((1, 3)) / count[:, None]).sqrt())
        counts.append(count[:, None].expand(-1, wm.shape[1]))
        spans.append(span)
    vals = torch.cat([s.reshape(-1) for s in scores])
    cnt = torch.cat([c.reshape(-1) for c in counts])
    order = torch.argsort(vals, stable=True)
    cum = torch.cumsum(cnt[order], 0)
    i = int(torch.searchsorted(cum, torch.tensor(amount * float(cum[-1]), dtype=cum.dtype)))
    thr = vals[order[min(i, len(order) - 1)]]
    masks = {}
    for w, sc, span in zip(weights, scores, spans):
        keep = (sc > thr).repeat_interleave(kb, 0)[:w.shape[0]].repeat_interleave(span, 1)
        masks[w] = keep.reshape(w.shape).float()
    return masks


def prune_blocks_and_finetune(model, Xtr, Ytr, Xte, Yte, amount=0.9, whole_filters=False):
    weights = [m.weight for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    masks = block_masks(weights, amount, whole_filters=whole_filters)
    with torch.no_grad():
        for w, m in masks.items():
            w.mul_(m)
    raw = accuracy(model, Xte, Yte)
    train(model, Xtr, Ytr, epochs=30, lr=2e-3, masks=masks)
    sparsity = float(sum((w == 0).sum() for w in weights) / sum(w.numel() for w in weights))
    return raw, accuracy(model, Xte, Yte), sparsity


def main():
    torch.manual_seed(SEED)
    torch.set_num_threads(2)
    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[:, None]
    xtr, xte, ytr, yte = train_test_split(x, d.target, test_size=0.25, random_state=SEED,
                                          stratify=d.target)
    Xtr, Ytr = torch.from_numpy(xtr), torch.from_numpy(ytr)
    Xte, Yte = torch.from_numpy(xte), torch.from_numpy(yte)
    model = net()
    train(model, Xtr, Ytr, epochs=40, lr=5e-3)
    acc = accuracy(model, Xte, Yte)
    sd = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    np.savez(os.path.join(OUT, "digits_cnn.npz"), **sd)

    # global magnitude pruning of every conv and linear weight to 90 %, then fine-tune
    weights = [m.weight for m in model.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    allw = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    thr = torch.quantile(allw, 0.9)
    masks = {w: (w.detach().abs() > thr).float() for w in weights}
    with torch.no_grad():
        for w, m in masks.items():
            w.mul_(m)
    acc_pruned_raw = accuracy(model, Xte, Yte)
    train(model, Xtr, Ytr, epochs=30, lr=2e-3, masks=masks)
    acc_pruned = accuracy(model, Xte, Yte)
    sdp = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    np.savez(os.path.join(OUT, "digits_cnn_pruned.npz"), **sdp)
    sparsity = float(sum((w == 0).sum() for w in weights) / sum(w.numel() for w in weights))

    # the same from the float weights, pruned in blocks of 4 output channels (after the
    # unstructured run, so its random stream and outputs stay as they were)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    acc_block_raw, acc_block, block_sparsity = prune_blocks_and_finetune(model, Xtr, Ytr,
                                                                         Xte, Yte)
    sdb = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    np.savez(os.path.join(OUT, "digits_cnn_pruned_block4.npz"), **sdb)

    # and to 70 % in blocks of 4 output channels x whole 3x3 filters (the sparse Winograd
    # kernel's blocks)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})
    acc_filt_raw, acc_filt, filt_sparsity = prune_blocks_and_finetune(
        model, Xtr, Ytr, Xte, Yte, amount=0.7, whole_filters=True)
    sdf = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    np.savez(os.path.join(OUT, "digits_cnn_pruned_filters4.npz"), **sdf)

    calib = xtr[:128]
    np.savez_compressed(os.path.join(OUT, "digits.npz"), x_test=(xte * 16).astype(np.uint8),
                        y_test=yte.astype(np.int64), x_calib=(calib * 16).astype(np.uint8))
    info = {"test_accuracy": acc, "pruned_before_finetune": acc_pruned_raw,
            "pruned_finetuned": acc_pruned, "weight_sparsity": sparsity,
            "block4_pruned_before_finetune": acc_block_raw, "block4_pruned_finetuned": acc_block,
            "block4_weight_sparsity": block_sparsity,
            "filters4_pruned_before_finetune": acc_filt_raw,
            "filters4_pruned_finetuned": acc_filt, "filters4_weight_sparsity": filt_sparsity,
            "train": len(xtr), "test": len(xte), "seed": SEED}
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
