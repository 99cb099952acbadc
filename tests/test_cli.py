"""The command line, run as a user runs it."""
import subprocess
import sys

import numpy as np
import pytest

from onnx_models import conv_block_model


def nutshell(*args):
    return subprocess.run([sys.executable, "-m", "nutshell", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("m") / "block.onnx"
    path.write_bytes(conv_block_model().SerializeToString())
    return path


@pytest.mark.parametrize("cmd", [[], ["compile"], ["run"], ["info"], ["bench"], ["demo"]])
def test_help(cmd):
    r = nutshell(*cmd, "--help")
    assert r.returncode == 0 and "usage" in r.stdout


def test_info(model_path):
    r = nutshell("info", model_path, "--compile")
    assert r.returncode == 0, r.stderr
    assert "parameters: 1,546" in r.stdout and "FLOPs" in r.stdout and "arena" in r.stdout


def test_info_lists_all_unsupported_ops(tmp_path):
    from onnx import helper
    from onnx_models import make_model, vi
    nodes = [helper.make_node("Hardmax", ["x"], ["a"]), helper.make_node("NonZero", ["a"], ["y"])]
    path = tmp_path / "u.onnx"
    path.write_bytes(make_model(nodes, [vi("x", [2])], [vi("y", [2])]).SerializeToString())
    r = nutshell("info", path)
    assert r.returncode == 1 and "Hardmax (opset 13), NonZero (opset 13)" in r.stdout


def test_compile_writes_bundle_confined(model_path, tmp_path):
    r = nutshell("compile", model_path, "-o", tmp_path / "out", "--name", "../evil name", "--threads", 1)
    assert r.returncode == 0, r.stderr
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["___evil_name.h", "___evil_name.o", "lib___evil_name.so"]   # confined (row 5)
    assert not (tmp_path / "evil name.h").exists()


def test_run_and_save(model_path, tmp_path):
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = nutshell("run", model_path, "--input", f"input={tmp_path / 'x.npy'}", "--save", tmp_path / "o.npz")
    assert r.returncode == 0, r.stderr
    out = np.load(tmp_path / "o.npz")["out"]
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def test_bad_model_is_a_clean_error(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"garbage")
    r = nutshell("run", tmp_path / "bad.onnx")
    assert r.returncode == 2 and "ModelLoadError" in r.stderr and "Traceback" not in r.stderr


def test_demo_trains_mnist_to_96_percent(tmp_path):
    plot = tmp_path / "curves.png"
    r = nutshell("demo", "--threads", 2, "--plot", plot, "--no-torch")
    assert r.returncode == 0, r.stderr
    accuracy = float(r.stdout.split("held-out accuracy ")[1].split("%")[0])
    assert accuracy >= 96.0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "inference model: " in r.stdout
