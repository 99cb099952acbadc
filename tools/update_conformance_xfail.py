"""Regenerate tests/conformance_xfail.py: run every selected conformance case and
group the failures by reason.

    python tools/update_conformance_xfail.py"""
import collections
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT / "tests"))
warnings.filterwarnings("ignore")

import conformance  # noqa: E402
import conformance_report  # noqa: E402

REASONS = [  # (substring of the error, reason)
    ("element type", "dtype: bfloat16, float8, 2/4-bit, string, sequence and optional values are not supported"),
    ("got () object", "dtype: bfloat16, float8, 2/4-bit, string, sequence and optional values are not supported"),
    ("no tensor type information", "dtype: bfloat16, float8, 2/4-bit, string, sequence and optional values are not supported"),
    ("mode 'cubic'", "Resize: cubic mode is not lowered"),
    ("antialias", "Resize: antialias and keep_aspect_ratio_policy are not supported"),
    ("-D pooling", "pooling/convolution: only 2-D is lowered"),
    ("-D is not lowered", "pooling/convolution: only 2-D is lowered"),
    ("training_mode", "training-mode Dropout/BatchNormalization inside an ONNX graph"),
    ("Einsum", "Einsum is not implemented"),
    ("needs a float input", "integer inputs to Pow and MaxPool"),
]


def main():
    groups = collections.defaultdict(list)
    cases = conformance.cases()
    for case in cases:
        try:
            conformance_report.check(case)
        except Exception as exc:  # noqa: BLE001
            text = str(exc)
            reason = next((r for key, r in REASONS if key in text), "other: not yet investigated")
            groups[reason].append(case.name)
    lines = ['"""Conformance cases nutshell does not pass yet, grouped by reason (as ONNX Runtime',
             'keeps its list); each is an expected failure in test_onnx_conformance.py.',
             'Regenerate with tools/update_conformance_xfail.py."""', "", "XFAIL = {"]
    for reason, names in sorted(groups.items()):
        lines.append(f"    {reason!r}: [")
        lines += [f"        {n!r}," for n in sorted(names)]
        lines.append("    ],")
    lines.append("}")
    (ROOT / "tests" / "conformance_xfail.py").write_text("\n".join(lines) + "\n")
    failed = sum(len(v) for v in groups.values())
    print(f"{len(cases) - failed} / {len(cases)} pass; xfail list written")
    for reason, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        print(f"{len(names):4d} {reason}" + (f": {names}" if reason.startswith("other") else ""))


if __name__ == "__main__":
    main()
