"""A quantized model (a zoo model exported to ONNX and quantized by onnxruntime's own
``quantize_static``, per-channel int8 weights, uint8 activations) in fastconv
(``fc.from_onnx`` + ``fc.optimize``) against onnxruntime on the same file, and against
fastconv on the float export, in alternating isolated rounds (fastconv._peers.run_isolated:
2 threads, 0.3 s of warm-up, median of --repeat calls, each runtime in a fresh process).
``--format qdq`` (the default): QuantizeLinear/DequantizeLinear pairs, which fuse_qdq runs
on the int8 kernels; ``--format qoperator``: QLinearConv and onnxruntime's QLinearAdd etc.,
which the importer maps onto them.

    python bench/qdq_models.py --model resnet50 --rounds 4
    python bench/qdq_models.py --model mobilenet_v2 --rounds 4 --format qoperator
    python bench/qdq_models.py --model mobilenet_v2 --format qoperator --save mv2_q.onnx

(``--save``: write the quantized file and stop, e.g. for ``bench/kernel_ab.py --model
mv2_q.onnx``.)

Also prints how far fastconv's output is from onnxruntime's on one input, in steps of
the output's quantization, and whether the top class agrees.  Needs torch (the export)
and onnxruntime (with its quantization tool).  The calibration batches are random
images: enough for timing, not for accuracy (tests/test_compress.py measures that).
"""
import argparse
import os
import shutil
import tempfile

import numpy as np

from fastconv import _peers


def quantize_qdq(float_path, out_path, batches, form="qdq"):
    """onnxruntime's static quantization of ``float_path`` (per channel), in QDQ form or
    (form "qoperator") the operator form."""
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"x": b} for b in batches)

        def get_next(self):
            return next(self.it, None)

    fmt = QuantFormat.QOperator if form == "qoperator" else QuantFormat.QDQ
    quantize_static(float_path, out_path, Reader(), quant_format=fmt,
                    per_channel=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8)
    return out_path


def parity(qdq_path, x):
    """(max, mean) |fastconv - onnxruntime| in output steps, and top-1 agreement."""
    import onnx
    from onnx import numpy_helper

    import fastconv as fc
    y = fc.optimize(fc.from_onnx(qdq_path), x)(x)
    ref = _peers.ort_session(qdq_path, 2).run(None, {"x": x})[0]
    proto = onnx.load(qdq_path)
    last = [n for n in proto.graph.node if n.op_type == "DequantizeLinear"][-1]
    step = float(next(numpy_helper.to_array(t) for t in proto.graph.initializer
                      if t.name == last.input[1]))
    d = np.abs(y.astype(np.float64) - ref) / step
    return float(d.max()), float(d.mean()), bool((y.argmax(1) == ref.argmax(1)).all())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calibration", type=int, default=4, help="calibration batches")
    ap.add_argument("--format", choices=("qdq", "qoperator"), default="qdq")
    ap.add_argument("--save", help="write the quantized file here and stop")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    fp = _peers.export_zoo_onnx(a.model, os.path.join(tmp, "f.onnx"), 1, 224)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
               for _ in range(a.calibration)]
    qp = quantize_qdq(fp, os.path.join(tmp, "q.onnx"), batches, a.format)
    if a.save:
        shutil.copyfile(qp, a.save)
        print(f"wrote {a.save}")
        return
    spec = {"model": a.model, "batch": 1, "size": 224, "threads": a.threads,
            "repeat": a.repeat, "kwargs": {}}
    tag = "QDQ" if a.format == "qdq" else "QOperator"
    runs = {f"fastconv int8 ({tag} file)": ("fastconv", qp),
            f"onnxruntime int8 ({tag} file)": ("onnxruntime", qp),
            "fastconv fp32 (float file)": ("fastconv", fp)}
    res = {k: [] for k in runs}
    for _ in range(a.rounds):
        for name, (rt, path) in runs.items():
            out = _peers.run_isolated(dict(spec, runtime=rt, onnx=path))
            if "error" in out:
                raise SystemExit(f"{name}: {out['error']}")
            res[name].append(out["median_s"] * 1e3)
    print(f"{a.model}, batch 1, {a.threads} threads, medians of {a.repeat} calls, "
          f"{a.rounds} alternating rounds (ms):")
    for name, v in res.items():
        print(f"  {name:30s} {np.median(v):7.2f}   rounds: " + " ".join(f"{t:.2f}" for t in v))
    f = np.array(res[f"fastconv int8 ({tag} file)"])
    o = np.array(res[f"onnxruntime int8 ({tag} file)"])
    print(f"  fastconv int8 speed / onnxruntime int8: {np.median(o) / np.median(f):.2f}x by "
          f"medians (per round {' '.join(f'{r:.2f}' for r in o / f)})")
    fp32 = np.array(res["fastconv fp32 (float file)"])
    print(f"  fastconv int8 / fastconv fp32 speed: {np.median(fp32) / np.median(f):.2f}x")
    mx, mean, top1 = parity(qp, rng.standard_normal((1, 3, 224, 224)).astype(np.float32))
    print(f"  output against onnxruntime: max {mx:.0f} steps, mean {mean:.2f} steps, "
          f"top-1 {'equal' if top1 else 'differs'}")


if __name__ == "__main__":
    main()
