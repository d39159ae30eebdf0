"""The digits CNN of scripts/train_digits.py as a fastconv graph, built from its state dict
with the Node API (no torch needed), and its accuracy on the held-out split."""
import os

import numpy as np

from fastconv.graph import Model, Node

DATA = os.path.join(os.path.dirname(__file__), "data")


def load_data():
    d = np.load(os.path.join(DATA, "digits.npz"))
    x_test = (d["x_test"].astype(np.float32) / 16.0)
    x_calib = (d["x_calib"].astype(np.float32) / 16.0)
    return x_test, d["y_test"], x_calib


def state(pruned=False):
    """The float weights, or (pruned=True) the 90 %-pruned fine-tuned ones, or
    (pruned="block4") those pruned in blocks of 4 output channels, or ("filters4") those
    pruned to 70 % in blocks of 4 output channels x whole 3x3 filters."""
    name = {False: "digits_cnn.npz", True: "digits_cnn_pruned.npz",
            "block4": "digits_cnn_pruned_block4.npz",
            "filters4": "digits_cnn_pruned_filters4.npz"}[pruned]
    with np.load(os.path.join(DATA, name)) as f:
        return {k: f[k] for k in f.files}


def _bn(sd, i):
    scale = sd[f"{i}.weight"] / np.sqrt(sd[f"{i}.running_var"] + 1e-5)
    shift = sd[f"{i}.bias"] - sd[f"{i}.running_mean"] * scale
    return {"scale": scale.astype(np.float32), "shift": shift.astype(np.float32)}


def build(sd):
    conv = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    nodes, prev = [], "x"
    for i, (c, b) in enumerate(((0, 1), (3, 4), (7, 8), (10, 11))):
        nodes += [Node("conv", f"conv{i + 1}", [prev], [f"c{i}"], conv,
                       {"weight": sd[f"{c}.weight"]}),
                  Node("affine", f"bn{i + 1}", [f"c{i}"], [f"b{i}"], {}, _bn(sd, b)),
                  Node("relu", f"relu{i + 1}", [f"b{i}"], [f"r{i}"])]
        prev = f"r{i}"
        if i == 1:
            nodes.append(Node("max_pool", "pool", [prev], ["p"],
                              dict(kernel=(2, 2), stride=(2, 2), pads=(0, 0, 0, 0))))
            prev = "p"
    nodes += [Node("global_avg_pool", "gap", [prev], ["g"]),
              Node("flatten", "flat", ["g"], ["f"], {"start": 1, "end": -1}),
              Node("linear", "fc1", ["f"], ["h"], {}, {"weight": sd["15.weight"],
                                                       "bias": sd["15.bias"]}),
              Node("relu", "relu5", ["h"], ["hr"]),
              Node("linear", "fc2", ["hr"], ["y"], {}, {"weight": sd["17.weight"],
                                                        "bias": sd["17.bias"]})]
    m = Model(nodes, ["x"], ["y"], name="digits_cnn", input_shapes={"x": (None, 1, 8, 8)})
    m.example_shapes = [(1, 1, 8, 8)]
    return m


def accuracy(model, x, y, batch=150):
    hits = 0
    for i in range(0, len(x), batch):
        hits += int((np.asarray(model(x[i:i + batch])).argmax(1) == y[i:i + batch]).sum())
    return 100.0 * hits / len(x)
