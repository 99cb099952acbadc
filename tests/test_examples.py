"""The examples run (tiny --quick configurations) and write their plots."""
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("name", ["optimizers", "vanishing_gradients", "overfitting"])
def test_example_runs(name, tmp_path):
    plot = tmp_path / f"{name}.png"
    r = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", "--plot", str(plot),
                        "--threads", "2"], capture_output=True, text=True, timeout=600, cwd=EXAMPLES)
    assert r.returncode == 0, r.stderr
    assert plot.exists() and "accuracy" in r.stdout
