"""The sweep plot reads DVC's experiment JSON and draws one point per (comparison, λ, labels per class)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def record(n_per_class, lam, diff):
    return {"rev": "x", "data": {
        "params": {"params.yaml": {"data": {"prepare": {"n_per_class": n_per_class},
                                            "pretrain_sup": {"lambda": lam}}}},
        "metrics": {"metrics/compare.json": {"data": {"differences": {
            "spt_minus_baseline": {"accuracy": {"diff": diff, "low": diff - 0.02, "high": diff + 0.02}},
            "spt_minus_baseline_matched": {"accuracy": {"diff": -diff, "low": -diff - 0.02, "high": -diff + 0.02}},
        }}}}}}


def test_plot_from_dvc_exp_show_json(tmp_path):
    shown = [{"rev": "workspace", "data": {"params": {}, "metrics": {}},
              "experiments": [{"revs": [record(16, 1.0, 0.05), record(64, 1.0, 0.01), record(16, 0.5, 0.03),
                                        record(None, 1.0, 0.0)]}]}]
    (tmp_path / "exp.json").write_text(json.dumps(shown))
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "plot_gain.py"), str(tmp_path / "exp.json"),
                             str(tmp_path / "gain.png")], capture_output=True, text=True, check=True)
    # every comparison compare reports, not only SPT − the unmatched baseline
    assert "6 points in 2 panels (spt_minus_baseline, spt_minus_baseline_matched)" in result.stdout
    assert "[0.5, 1.0]" in result.stdout
    assert (tmp_path / "gain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
