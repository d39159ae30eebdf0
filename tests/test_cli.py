"""The fastconv command."""
import json
import subprocess
import sys

from fastconv import cli


def test_info_prints_the_essentials(capsys, tmp_path):
    assert cli.main(["info", "--json", str(tmp_path / "info.json")]) == 0
    out = capsys.readouterr().out
    for word in ("fastconv", "numba", "threading_layer", "blas", "cpu_features"):
        assert word in out
    data = json.loads((tmp_path / "info.json").read_text())
    assert data["threading_layer"] == "tbb" and data["blas"]


def test_bench_small_model_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    rc = cli.main(["bench", "--size", "32", "--widths", "8", "16", "16", "24", "--repeat", "2",
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


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "fastconv.cli", "info"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "fastconv" in out.stdout


def test_bad_arguments_are_rejected(capsys):
    try:
        cli.main(["bench", "--batch", "0"])
    except SystemExit as e:
        assert e.code == 2
    else:
        raise AssertionError("expected an argparse error")
