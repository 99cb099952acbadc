"""Trainer checkpoints: save/load resume bit for bit (in this process and in a
fresh one), fit(checkpoint=, every=) continues an interrupted run, and a
truncated, corrupted or foreign file is refused without changing the trainer."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import nutshell as ns

nn = ns.nn
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One definition shared with the fresh process: BatchNorm (buffers), Dropout (the
# step-counted mask), Adam (slots), a schedule and augmentation (fit's generator).
SETUP = textwrap.dedent("""
    import numpy as np
    import nutshell as ns
    nn = ns.nn

    def make():
        ns.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3),
                            nn.Linear(16, 3))
        return ns.compile_training(net, (8, 6), optimizer=ns.optim.Adam(lr=0.01), threads=1)

    def data():
        r = np.random.default_rng(1)
        x = r.standard_normal((64, 6)).astype(np.float32)
        return x, (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0.5).astype(np.int64)

    def jitter(x, rng):
        return (x + rng.standard_normal(x.shape) * 0.05).astype(np.float32)

    FIT = dict(epochs=3, batch_size=8, progress=False, augment=jitter,
               lr_schedule=ns.optim.StepSchedule(5, 0.5))
""")
namespace = {}
exec(SETUP, namespace)
make, data, FIT, jitter = namespace["make"], namespace["data"], namespace["FIT"], namespace["jitter"]


def params(trainer):
    return trainer.state()


def test_save_load_repeats_next_steps_bit_for_bit(tmp_path):
    x, y = data()
    a = make()
    for i in range(3):
        a.step(x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8])
    path = str(tmp_path / "run.ckpt")
    a.save(path)
    want = [a.step(x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]) for i in range(3, 6)]
    b = make()
    b.load(path)
    assert b.step_count == 3
    got = [b.step(x[i * 8:(i + 1) * 8], y[i * 8:(i + 1) * 8]) for i in range(3, 6)]
    assert got == want
    for name, value in params(a).items():
        np.testing.assert_array_equal(params(b)[name], value, err_msg=name)


class Interrupted(Exception):
    pass


def test_fit_resumes_in_a_fresh_process_bit_for_bit(tmp_path):
    x, y = data()
    whole = make()
    history = whole.fit(x, y, **FIT)
    path = str(tmp_path / "fit.ckpt")
    calls = {"n": 0}

    def dying(xb, rng):                     # the run is killed during its 14th step
        calls["n"] += 1
        if calls["n"] == 14:
            raise Interrupted
        return jitter(xb, rng)

    with pytest.raises(Interrupted):
        make().fit(x, y, checkpoint=path, every=4, **dict(FIT, augment=dying))
    out = str(tmp_path / "resumed.npz")
    script = SETUP + textwrap.dedent(f"""
        t = make()
        x, y = data()
        h = t.fit(x, y, checkpoint={path!r}, every=4, **FIT)
        np.savez({out!r}, step_count=t.step_count, loss=np.array(h["loss"]), **t.state())
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as resumed:
        assert int(resumed["step_count"]) == whole.step_count == 24
        assert resumed["loss"].tolist() == history["loss"]
        for name, value in params(whole).items():
            np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def _spoiled(tmp_path, how):
    t = make()
    path = str(tmp_path / "ok.ckpt")
    t.save(path)
    blob = open(path, "rb").read()
    bad = str(tmp_path / f"{how}.ckpt")
    if how == "truncated":
        blob = blob[:len(blob) // 2]
    elif how == "corrupted":
        blob = blob[:-40] + bytes([blob[-40] ^ 1]) + blob[-39:]
    else:
        blob = b"PK\x03\x04 not a checkpoint at all"
    open(bad, "wb").write(blob)
    return bad


@pytest.mark.parametrize("how,message", [("truncated", "truncated"), ("corrupted", "corrupted"),
                                         ("foreign", "not a nutshell checkpoint")])
def test_a_bad_checkpoint_is_refused_and_changes_nothing(tmp_path, how, message):
    bad = _spoiled(tmp_path, how)
    x, y = data()
    t = make()
    t.step(x[:8], y[:8])
    before, steps = params(t), t.step_count
    with pytest.raises(ns.InputError, match=message):
        t.load(bad)
    assert t.step_count == steps
    for name, value in params(t).items():
        np.testing.assert_array_equal(value, before[name])


def test_another_models_checkpoint_is_refused(tmp_path):
    path = str(tmp_path / "other.ckpt")
    ns.manual_seed(0)
    other = ns.compile_training(nn.Sequential(nn.Linear(6, 3)), (8, 6),
                                optimizer=ns.optim.Adam(lr=0.01), threads=1)
    other.save(path)
    with pytest.raises(ns.InputError, match="another model"):
        make().load(path)


def test_save_is_atomic_and_leaves_no_temporary_file(tmp_path):
    t = make()
    path = str(tmp_path / "a.ckpt")
    t.save(path)
    t.save(path)                             # over an existing one
    assert sorted(os.listdir(tmp_path)) == ["a.ckpt"]
