"""Pipeline overhead: a no-op `dvc repro`, and which stages rerun after changing only λ.

In a temporary copy of the repository with the tiny profile (tests/tiny_params.yaml: the same 12
stages as the default params, on a few hundred rows), builds everything once, then:

1. times `dvc repro` with everything up to date (median of 3), beside `dvc version`, the floor
   any DVC command pays to start;
2. changes only ``pretrain_sup.lambda`` in params.yaml, runs `dvc repro` and lists the stages
   that ran, against the stages downstream of pretrain_sup (the baselines must not rerun).

    .venv/bin/python benchmarks/pipeline_overhead.py
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from tools.sandbox import stage_env, tiny_repository

# lambda changes SPT's pretraining, its finetuning and what the matched baselines match (tapt's pretraining
# reads the pretrain_sup section too, with lambda forced to 0: if DVC runs it again, it writes the same bytes)
EXPECTED_AFTER_LAMBDA = ["pretrain_sup", "finetune", "evaluate", "study_pretrain@spt-7",
                         "study_finetune@spt-7", "study_matched@baseline_matched-7", "study_matched@baseline_flops-7",
                         "study_evaluate@spt-7", "study_evaluate_matched@baseline_matched-7",
                         "study_evaluate_matched@baseline_flops-7", "compare"]
OPTIONAL = {"study_tapt@tapt-7"}


def timed(repo: Path, *command: str) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run(command, cwd=repo, env=stage_env(), capture_output=True, text=True, check=True)
    return time.perf_counter() - start, result.stdout


def main(argv: list[str] | None = None) -> None:
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    with tempfile.TemporaryDirectory(prefix="overhead-") as scratch:
        repo = tiny_repository(Path(scratch) / "repo")
        build, _ = timed(repo, "dvc", "repro")
        print(f"tiny profile, first `dvc repro` (12 stages): {build:.1f} s")

        floor = statistics.median(timed(repo, "dvc", "version")[0] for _ in range(3))
        noop_runs = [timed(repo, "dvc", "repro") for _ in range(3)]
        assert all("Running stage" not in out for _, out in noop_runs), "a no-op dvc repro ran a stage"
        noop = statistics.median(seconds for seconds, _ in noop_runs)
        print(f"\n{'command':<34} {'seconds (median of 3)':>22}")
        print(f"{'dvc repro, everything up to date':<34} {noop:>22.2f}")
        print(f"{'dvc version (startup floor)':<34} {floor:>22.2f}")

        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["pretrain_sup"]["lambda"] = params["pretrain_sup"]["lambda"] * 2
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        seconds, out = timed(repo, "dvc", "repro")
        rerun = re.findall(r"Running stage '([^']+)'", out)
        print(f"\nafter changing only pretrain_sup.lambda: {len(rerun)} of 12 stages rerun in {seconds:.1f} s")
        print(f"  rerun:    {', '.join(rerun)}")
        print(f"  expected: {', '.join(EXPECTED_AFTER_LAMBDA)} "
              f"({'match' if sorted(set(rerun) - OPTIONAL) == sorted(EXPECTED_AFTER_LAMBDA) else 'MISMATCH'})")


if __name__ == "__main__":
    main()
