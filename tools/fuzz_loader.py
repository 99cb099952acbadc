"""Fuzz the ONNX loader, compiler and runtime against ONNX Runtime.

Mutated models (tools/fuzz_mutations.py: protobuf fields and raw bytes of three
real models) go to child processes that load, compile (threads=1) and run each
one in nutshell, then in ONNX Runtime, under an address-space limit
(RLIMIT_AS) and a per-case timeout (CPU seconds, and ten times that of wall
time). A child handles many cases (startup is paid once) and is restarted
after a crash or a hang.

Failures: a signal, a hang, running out of memory, a Python exception that is
not a nutshell error, or outputs that differ from ONNX Runtime's when both
run (tolerance: rtol 1e-3, atol 1e-3 x max(1, |reference|), NaN == NaN;
"mismatch_nonfinite" when NaN/Inf appear on one side only). Compiled models go
to a cache in OUT/cache, so a mutation that leaves the graph as it was costs a
link, not a compile. A
model nutshell rejects but ONNX Runtime runs is counted, not a failure
(unsupported ops, symbolic shapes); so is one ONNX Runtime rejects or crashes on.
Each failure leaves OUT/failures/<outcome>_<case>.onnx and .txt.

    python tools/fuzz_loader.py --cases 10000 --jobs 2 --out fuzz_out
    python tools/fuzz_loader.py --replay 1234 --out fuzz_out    # one case, in this process
"""
import argparse
import collections
import json
import os
import resource
import selectors
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tools"), str(ROOT / "tests")]
FAILURES = ("signal", "exit", "hang", "oom", "python_error", "mismatch", "mismatch_nonfinite")
MAX_MODEL_BYTES = 256 << 20     # larger legitimate graphs are counted as skipped, not compiled


def seed_models(out, names=("conv_block", "lenet", "unet_bit")):
    """name -> serialized model; the torch exports are made once and kept in OUT/seeds."""
    folder = Path(out) / "seeds"
    folder.mkdir(parents=True, exist_ok=True)
    seeds = {}
    for name in names:
        path = folder / f"{name}.onnx"
        if not path.exists():
            path.write_bytes(_export_seed(name))
        seeds[name] = path.read_bytes()
    return seeds


def _export_seed(name):
    from onnx_models import conv_block_model, torch_export, torch_models
    if name == "conv_block":
        return conv_block_model().SerializeToString()
    import torch
    torch.manual_seed(0)
    factory, shape = torch_models()[name]
    return torch_export(factory(), torch.randn(*shape), 13)


# ---- the child: one case at a time, results as JSON lines on stdout -------------------

def _feeds(specs):
    import numpy as np
    rng = np.random.default_rng(0)
    feeds = {}
    for name, dtype, shape in specs:
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            feeds[name] = rng.integers(0, 2, shape).astype(bool)
        else:
            feeds[name] = rng.integers(0, 3, shape).astype(dtype)
    return feeds


def run_nutshell(data):
    """('ran', outputs, specs) | ('rejected', message) | (failure outcome, message)."""
    import nutshell as ns
    try:
        graph = ns.load_onnx(data)
        if sum(v.type.nbytes for v in graph.inputs) + sum(v.type.nbytes for v in graph.outputs) \
                > MAX_MODEL_BYTES:
            return "skipped", "inputs/outputs over the fuzzer's memory cap"
        model = ns.compile(graph, threads=1)
        specs = [(v.name, v.type.dtype.numpy, v.type.shape) for v in graph.inputs]
        return "ran", model.run(_feeds(specs)), specs
    except ns.NutshellError as exc:
        return "rejected", f"{type(exc).__name__}: {str(exc)[:300]}"
    except MemoryError:
        return "oom", traceback.format_exc()
    except Exception:   # noqa: BLE001 — exactly what the fuzzer looks for
        return "python_error", traceback.format_exc()


def run_ort(data, specs):
    import numpy as np
    import onnxruntime as ort
    try:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 4
        sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
        if specs is None:
            types = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(int64)": np.int64,
                     "tensor(int32)": np.int32, "tensor(bool)": np.bool_, "tensor(float16)": np.float16}
            specs = [(i.name, types.get(i.type, np.float32), [d if isinstance(d, int) and d >= 0 else 1
                                                           for d in i.shape]) for i in sess.get_inputs()]
        names = [o.name for o in sess.get_outputs()]
        return dict(zip(names, sess.run(names, _feeds(specs))))
    except Exception as exc:   # noqa: BLE001 — ONNX Runtime's refusals come in many types
        return f"{type(exc).__name__}: {str(exc)[:200]}"


def compare(ours, theirs):
    """None when the outputs agree, else (outcome, what differs)."""
    import numpy as np
    for name, want in theirs.items():
        got = ours.get(name)
        if got is None:
            return "mismatch", f"output '{name}' missing"
        want = np.asarray(want)
        if got.shape != want.shape:
            return "mismatch", f"output '{name}': shape {got.shape} vs ONNX Runtime's {want.shape}"
        if want.dtype == object or got.size == 0:
            continue
        w, g = want.astype(np.float64), got.astype(np.float64)
        finite = np.isfinite(w)
        atol = 1e-3 * max(1.0, float(np.max(np.abs(w[finite]))) if finite.any() else 1.0)
        differ = ~np.isclose(g, w, rtol=1e-3, atol=atol, equal_nan=True)
        if differ.any():
            nonfinite = bool(np.all(~np.isfinite(g[differ]) | ~np.isfinite(w[differ])))
            return ("mismatch_nonfinite" if nonfinite else "mismatch",
                    f"output '{name}': {int(differ.sum())} of {w.size} values differ" +
                    (" (NaN/Inf on one side only)" if nonfinite else
                     f" (max |diff| {np.nanmax(np.abs(g - w)[differ]):.3g})"))
    return None


def run_case(data, emit=lambda msg: None):
    """The outcome of one model: (outcome, detail)."""
    ours = run_nutshell(data)
    if ours[0] in FAILURES or ours[0] == "skipped":
        return ours[0], ours[1]
    emit({"phase": "ort", "ours": ours[0]})      # a crash from here on is ONNX Runtime's
    theirs = run_ort(data, ours[2] if ours[0] == "ran" else None)
    if ours[0] == "rejected":
        return ("rejected_both" if isinstance(theirs, str) else "rejected_nutshell_only"), ours[1]
    if isinstance(theirs, str):
        return "ort_rejects", theirs
    return compare(ours[1], theirs) or ("agree", "")


def child_main(out, base_seed, seed_names):
    import warnings
    warnings.filterwarnings("ignore")
    from fuzz_mutations import make_case
    seeds = seed_models(out, seed_names)
    results = os.fdopen(os.dup(1), "w")       # stray prints from libraries go to stderr instead
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def emit(msg):
        results.write(json.dumps(msg) + "\n")
        results.flush()
    for line in sys.stdin:
        number = int(line)
        emit({"phase": "nutshell", "case": number})
        _, data, _ = make_case(seeds, base_seed, number)
        outcome, detail = run_case(data, emit)
        emit({"case": number, "outcome": outcome, "detail": detail})


# ---- the parent: workers, limits, bookkeeping ------------------------------------------

class Worker:
    def __init__(self, args, number, sel):
        self.args, self.number, self.sel = args, number, sel
        self.proc, self.case, self.phase, self.started = None, None, None, 0.0

    def start(self):
        limit = self.args.mem_gb << 30
        cmd = [sys.executable, __file__, "--child", "--out", self.args.out, "--seed", str(self.args.seed),
               "--seeds", ",".join(self.args.seeds)]
        env = dict(os.environ, OMP_NUM_THREADS="1",      # a private cache: repeated graphs link, not compile
                   NUTSHELL_CACHE_DIR=str(Path(self.args.out).resolve() / "cache"))
        with open(Path(self.args.out) / f"child{self.number}.stderr", "w") as err:   # the last child's
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
                preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
        self.pending = b""
        self.sel.register(self.proc.stdout, selectors.EVENT_READ, self)

    def cpu_seconds(self):
        """CPU time the child has used (Linux /proc; wall time elsewhere)."""
        try:
            with open(f"/proc/{self.proc.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return time.monotonic()

    def overdue(self, limit):
        """A hang: `limit` CPU seconds on this case (a loop), or 10x that of wall time
        (a block). CPU time, because a busy machine can starve a child for minutes."""
        return self.cpu_seconds() - self.cpu_start > limit or time.monotonic() - self.started > 10 * limit

    def send(self, number):
        if self.proc is None:
            self.start()
        self.case, self.phase, self.started = number, "nutshell", time.monotonic()
        self.cpu_start = self.cpu_seconds()
        self.proc.stdin.write(f"{number}\n".encode())
        self.proc.stdin.flush()

    def stop(self):
        """Kill the child (if alive) and reap it; its exit status."""
        if self.proc is None:
            return None
        self.sel.unregister(self.proc.stdout)
        try:
            self.proc.wait(timeout=5)        # a child whose output closed is exiting on its own
        except subprocess.TimeoutExpired:
            self.proc.kill()
        code = self.proc.wait()
        self.proc.stdin.close()
        self.proc.stdout.close()
        self.proc = None
        return code


def fuzz(args, log=print):
    """Run cases [start, start + cases); returns the Counter of outcomes."""
    from fuzz_mutations import make_case
    seeds = seed_models(args.out, args.seeds)
    failures = Path(args.out) / "failures"
    failures.mkdir(parents=True, exist_ok=True)
    counts, examples = collections.Counter(), collections.defaultdict(list)
    todo = list(range(args.start, args.start + args.cases))[::-1]
    sel, begun = selectors.DefaultSelector(), time.monotonic()
    workers = [Worker(args, i, sel) for i in range(args.jobs)]

    def record(w, outcome, detail):
        if w.phase == "ort" and outcome in ("signal", "exit", "hang", "oom"):
            outcome = "ort_" + outcome              # ONNX Runtime's own trouble, after ours ran
        counts[outcome] += 1
        last = (str(detail).strip().splitlines() or [""])[-1][:200]
        if len(examples[outcome]) < 5:
            examples[outcome].append(f"case {w.case}: {last}")
        if outcome in FAILURES:
            try:
                name, data, steps = make_case(seeds, args.seed, w.case)
            except Exception as exc:    # noqa: BLE001 — a bug of the generator, not of nutshell
                name, data, steps = "?", b"", [f"the generator failed: {exc!r}"]
            (failures / f"{outcome}_{w.case}.onnx").write_bytes(data)
            (failures / f"{outcome}_{w.case}.txt").write_text(
                f"seed model {name}; mutations {steps}\n{detail}\n")
            log(f"FAIL {outcome} case {w.case}: {last}")
        w.case = None
        done = sum(counts.values())
        if done % args.report_every == 0:
            log(f"{done} cases, {time.monotonic() - begun:.0f} s: {dict(counts)}")
            write_summary()

    def write_summary():
        summary = {"cases": sum(counts.values()), "seconds": round(time.monotonic() - begun),
                   "outcomes": dict(counts), "failures": sum(counts[f] for f in FAILURES),
                   "examples": examples}
        (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1))

    def feed(w):
        if todo:
            w.send(todo.pop())

    for w in workers:
        feed(w)
    while any(w.case is not None for w in workers):
        for key, _ in sel.select(timeout=1.0):
            w = key.data
            chunk = os.read(w.proc.stdout.fileno(), 1 << 16)
            if not chunk:                           # the child died: a signal or a hard exit
                code = w.stop()
                record(w, "signal" if code < 0 else "exit", f"child exited with status {code}")
                feed(w)
                continue
            w.pending += chunk
            while b"\n" in w.pending:
                line, w.pending = w.pending.split(b"\n", 1)
                msg = json.loads(line)
                if "phase" in msg:
                    w.phase = msg["phase"]
                elif "outcome" in msg:
                    record(w, msg["outcome"], msg["detail"])
                    feed(w)
        for w in workers:
            if w.case is not None and w.overdue(args.timeout):
                w.stop()
                record(w, "hang", f"no result after {args.timeout} CPU s or {10 * args.timeout} s")
                feed(w)
    for w in workers:
        w.stop()
    write_summary()
    return counts


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=1000)
    p.add_argument("--start", type=int, default=0, help="first case number")
    p.add_argument("--seed", type=int, default=0, help="base seed of the mutations")
    p.add_argument("--seeds", type=lambda s: s.split(","), default=["conv_block", "lenet", "unet_bit"])
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--timeout", type=float, default=60.0, help="CPU seconds per case (10x that of wall time)")
    p.add_argument("--mem-gb", type=int, default=4, help="address-space limit per child")
    p.add_argument("--out", default="fuzz_out")
    p.add_argument("--report-every", type=int, default=500)
    p.add_argument("--replay", type=int, help="run this one case here and print its outcome")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child_main(args.out, args.seed, args.seeds)
    if args.replay is not None:
        from fuzz_mutations import make_case
        name, data, steps = make_case(seed_models(args.out, args.seeds), args.seed, args.replay)
        print(f"seed model {name}; mutations {steps}")
        print(*run_case(data, print), sep="\n")
        return 0
    counts = fuzz(args)
    failed = sum(counts[f] for f in FAILURES)
    print(f"{sum(counts.values())} cases: " + ", ".join(f"{k} {v}" for k, v in counts.most_common()))
    print(f"failures: {failed} (reproducers in {args.out}/failures)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
