"""The fastconv command."""
import json
import subprocess
import sys

import numpy as np

from fastconv import cli


def test_info_prints_the_essentials(capsys, tmp_path):
    assert cli.main(["info", "--json", str(tmp_path / "info.json")]) == 0
    out = capsys.readouterr().out
    for word in ("fastconv", "numba", "threading_layer", "blas", "cpu_features"):
        assert word in out
    data = json.loads((tmp_path / "info.json").read_text())
    assert data["threading_layer"] == "tbb" and data["blas"]
    from fastconv import planner
    assert data["planner_rates"] == planner.RATE_TABLE in planner.RATES


def test_bench_small_model_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    rc = cli.main(["bench", "--size", "32", "--widths", "8", "16", "16", "24", "--repeat", "2", "--warm", "0",
                   "--json", str(path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "GFLOP/s" in out and "% roof" in out and "end-to-end" in out
    data = json.loads(path.read_text())
    algos = {(r["layer"], r["algo"]) for r in data["layers"]}
    assert ("conv1", "direct") in algos and ("conv1", "im2col") in algos
    assert all(r["ok"] for r in data["layers"])
    assert data["sgemm_roof_gflops"] > 0 and data["compile_s"] >= 0
    assert sum(r["auto"] for r in data["layers"]) == len({r["layer"] for r in data["layers"]})
    assert "handoff" in data


def test_measure_handoff():
    """Each thread's read of its own freshly written block and of the next thread's."""
    import numpy as np
    import fastconv as fc
    from fastconv import _runtime
    from fastconv.kernels.cpu.stream import read_blocks, write_blocks
    assert cli.measure_handoff(1) is None
    if _runtime.max_threads() >= 2:
        own, other = cli.measure_handoff(2, repeat=3)
        assert 0 < own < 1 and 0 < other < 1
    old = fc.get_num_threads()
    fc.set_num_threads(1)   # every task on thread 0: its block written, the next one not
    try:
        buf = np.zeros((2, 64), np.float32)
        out = np.zeros(2, np.float32)
        write_blocks(buf, np.float32(1.0))
        read_blocks(buf, 0, out)
        assert out[0] == 64 + 63 * 64 / 2 and not buf[1].any()
        read_blocks(buf, 1, out)
        assert out[0] == 0
    finally:
        fc.set_num_threads(old)


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "fastconv.cli", "info"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "fastconv" in out.stdout


def test_bad_arguments_are_rejected(capsys):
    for bad in (["--batch", "0"], ["--warm", "-1"], ["--warm", "nan"], ["--rounds", "0"]):
        try:
            cli.main(["bench"] + bad)
        except SystemExit as e:
            assert e.code == 2
        else:
            raise AssertionError(f"expected an argparse error for {bad}")


def test_bench_compares_peers_end_to_end_and_plots(tmp_path, capsys):
    import pytest
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    path = tmp_path / "bench.json"
    plot = tmp_path / "roof.png"
    rc = cli.main(["bench", "--size", "32", "--widths", "8", "8", "8", "8", "--repeat", "2", "--warm", "0",
                   "--compare", "torch,onnxruntime", "--rounds", "2", "--plot", str(plot),
                   "--json", str(path), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "fastconv speed:" in out and "x torch" in out and "x onnxruntime" in out
    assert "2 alternating rounds" in out and "(median of 2 rounds," in out
    data = json.loads(path.read_text())
    assert set(data["isolated"]) == {"fastconv", "torch", "onnxruntime"}
    assert all("median_s" in r and len(r["rounds"]) == 2 for r in data["isolated"].values()), \
        data["isolated"]
    for peer in ("torch", "onnxruntime"):
        r = data["isolated"][peer]
        assert len(r["speed_rounds"]) == 2 and r["speed"] > 0
    assert data["bandwidth_gbs"] > 0
    try:
        import matplotlib  # noqa: F401
        assert plot.stat().st_size > 1000
    except ImportError:
        assert not plot.exists()


def test_rounds_combine_into_same_round_ratios(capsys):
    """Each peer's speed is the median of its ratios to fastconv in the same round (not the
    ratio of the runtimes' overall medians); a failure in any round is reported."""
    def run(med, mn):
        return {"median_s": med, "min_s": mn, "first_call_s": 0.5}
    runs = {"fastconv": [run(1.0, 0.9), run(3.0, 2.5), run(1.1, 1.0)],
            "torch": [run(2.0, 1.9), run(3.0, 2.9), run(2.4, 2.2)],
            "onnxruntime": [run(1.0, 1.0), {"error": "boom"}, run(1.0, 1.0)]}
    e2e = cli._combine_rounds(runs)
    assert e2e["fastconv"]["median_s"] == 1.1 and e2e["fastconv"]["min_s"] == 0.9
    assert np.allclose(e2e["torch"]["speed_rounds"], [2.0, 1.0, 2.4 / 1.1])
    assert np.isclose(e2e["torch"]["speed"], 2.0)      # not 2.4 / 1.1 from the medians
    assert e2e["onnxruntime"] == {"error": "boom"}
    cli._print_peer_runs(e2e, "head")
    out = capsys.readouterr().out
    assert "fastconv speed: 2.00x torch (median of 3 rounds, 1.00-2.18x)" in out
    assert "onnxruntime  failed: boom" in out
    one = cli._combine_rounds({"fastconv": [run(1.0, 0.9)], "torch": [run(1.5, 1.4)]})
    cli._print_peer_runs(one, "head")
    out = capsys.readouterr().out
    assert "fastconv speed: 1.50x torch\n" in out


def test_bench_an_onnx_file(tmp_path, capsys):
    import pytest
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    from fastconv import _peers
    onnx_path = _peers.export_zoo_onnx("resnet_tiny", str(tmp_path / "m.onnx"), 1, 32,
                                       widths=[8, 8, 8, 8])
    assert torch is not None
    rc = cli.main(["bench", "--model", onnx_path, "--size", "32", "--repeat", "2", "--warm", "0",
                   "--compare", "onnxruntime", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "x onnxruntime" in out and "conv" in out


def _tiny_onnx(path):
    """conv+relu -> max pool -> conv + residual -> relu -> global pool -> gemm, on 3x8x8."""
    import numpy as np
    import pytest
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper, save
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array((0.3 * rng.standard_normal(s)).astype(np.float32), n)
            for n, s in [("w1", (4, 3, 3, 3)), ("b1", (4,)), ("w2", (4, 4, 3, 3)),
                         ("wf", (4, 5)), ("bf", (5,))]]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["c", "w2"], ["d"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["d", "c"], ["e"]),
             helper.make_node("Relu", ["e"], ["f"]),
             helper.make_node("GlobalAveragePool", ["f"], ["g"]),
             helper.make_node("Flatten", ["g"], ["h"]),
             helper.make_node("Gemm", ["h", "wf", "bf"], ["y"])]
    g = helper.make_graph(nodes, "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], init)
    save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


def test_bench_on_the_gpu_backend_with_the_simulator(tmp_path):
    """--backend cuda end to end on the CUDA simulator: per-node table timed device-resident,
    the check against the CPU backend, the isolated fastconv child on the device, and a peer
    that cannot run (onnxruntime without its CUDA provider) reported, not fatal."""
    import os
    import pytest
    pytest.importorskip("numba.cuda")
    pytest.importorskip("onnxruntime")
    model = _tiny_onnx(tmp_path / "tiny.onnx")
    out_json = tmp_path / "gpu.json"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    res = subprocess.run([sys.executable, "-m", "fastconv.cli", "bench", "--model", model,
                          "--backend", "cuda", "--repeat", "1", "--quiet", "--compare",
                          "onnxruntime", "--json", str(out_json)],
                         capture_output=True, text=True, env=env, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "backend cuda (CUDA simulator)" in res.stdout
    assert "onnxruntime  failed:" in res.stdout and "CUDAExecutionProvider" in res.stdout
    data = json.loads(out_json.read_text())
    assert data["backend"] == "cuda" and data["host_nodes"] == []
    assert data["rel_err_vs_cpu"] < 1e-5
    assert [r["algo"] for r in data["layers"] if r["fused"] == "conv"] == ["implicit_gemm"] * 2
    assert all(r["median_ms"] > 0 for r in data["layers"])
    assert "median_s" in data["isolated"]["fastconv"], data["isolated"]


def test_bench_rejects_unknown_models_backends_and_peers(capsys):
    assert cli.main(["bench", "--model", "alexnet", "--quiet"]) == 2
    assert cli.main(["bench", "--backend", "cuda", "--quiet"]) == 2
    assert cli.main(["bench", "--compare", "tensorflow", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "alexnet" in err and "cuda" in err and "tensorflow" in err


def test_node_compare_pairs_the_convolutions(tmp_path):
    """bench/node_compare.py: each runtime's per-node times of the same zoo model, the
    convolutions paired in order, sums by kernel; a model whose blocks fastconv fuses
    into single nodes (MobileNetV2's inverted residuals) is paired with the sums of the
    block's convolutions on the other side."""
    import os
    import pytest
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                          "node_compare.py")
    res = subprocess.run([sys.executable, script, "--model", "resnet_tiny", "--size", "32",
                          "--repeat", "2", "--threads", "1"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    import re
    rows = [ln for ln in res.stdout.splitlines()
            if re.fullmatch(r"\S+\s+\S+(?: \d+x\d+/\d+x\d+)?\s+[\d.]+\s+[\d.]+\s+[\d.]+x", ln)]
    assert len(rows) == 12  # the stem, 4 stages x 2 convs, 3 shortcuts
    assert "total" in res.stdout and "other nodes" in res.stdout
    res = subprocess.run([sys.executable, script, "--model", "mobilenet_v2", "--size", "32",
                          "--repeat", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    blocks = [ln for ln in res.stdout.splitlines() if re.match(r"features_\d+_", ln)]
    assert len(blocks) == 18  # 17 inverted residual blocks (the stem in the first), the last 1x1
    assert all(re.search(r"[\d.]+\s+[\d.]+\s+[\d.]+x$", ln) for ln in blocks)
