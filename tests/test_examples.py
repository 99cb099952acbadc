"""The examples run (tiny --quick configurations) and write their plots."""
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_quick(name, tmp_path, timeout=600):
    plot = tmp_path / f"{name}.png"
    r = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), "--quick", "--plot", str(plot),
                        "--threads", "2"], capture_output=True, text=True, timeout=timeout, cwd=EXAMPLES)
    assert r.returncode == 0, r.stderr
    assert plot.exists()
    return r.stdout


@pytest.mark.parametrize("name", ["optimizers", "vanishing_gradients", "overfitting"])
def test_example_runs(name, tmp_path):
    assert "accuracy" in run_quick(name, tmp_path)


# one script per system of the lecture; each prints its metric
LECTURE_SYSTEMS = {
    "segmentation": "mean IoU",
    "denoising_autoencoder": "ROC-AUC",
    "dcgan": "discriminator accuracy",
    "transformer_translation": "exact-match accuracy",
    "lstm_sequence": "held-out accuracy",
    "box_regression": "mean IoU",
    "imputation": "missing-pixel MSE",
}


@pytest.mark.parametrize("name", sorted(LECTURE_SYSTEMS))
def test_lecture_system_example_runs(name, tmp_path):
    assert LECTURE_SYSTEMS[name] in run_quick(name, tmp_path)


def test_roc_auc_and_iou_match_their_definitions():
    sys.path.insert(0, str(EXAMPLES))
    try:
        from _metrics import box_iou, per_class_iou, roc_auc
    finally:
        sys.path.remove(str(EXAMPLES))
    import numpy as np
    rng = np.random.default_rng(0)
    scores, positive = rng.integers(0, 5, 40).astype(float), rng.random(40) < 0.4
    pairs = [(a > b) + 0.5 * (a == b) for a in scores[positive] for b in scores[~positive]]
    assert roc_auc(scores, positive) == pytest.approx(np.mean(pairs), abs=1e-12)
    assert roc_auc([1, 2, 3], [False, True, True]) == 1.0
    pred, truth = np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 1]])
    np.testing.assert_allclose(per_class_iou(pred, truth, 2), [1 / 2, 2 / 3])
    np.testing.assert_allclose(box_iou(np.array([[0, 0, 2, 2.]]), np.array([[1, 0, 3, 2.]])), [1 / 3])
