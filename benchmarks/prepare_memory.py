"""Peak memory and throughput of `prepare` as the unlabeled corpus grows (1x and 10x).

Builds a corpus of the built-in unlabeled text (rotten_tomatoes plots + bbc_news articles), then
the same corpus repeated 10 times with each copy's lines made distinct (so de-duplication keeps
them), and runs the real stage on each in a temporary copy of the repository. Prints MB of text,
seconds, MB/s and peak RSS side by side, the 10x / 1x memory ratio, and the marginal MB/s (the
extra text over the extra seconds: the stage's fixed start-up cost left out).

    .venv/bin/python benchmarks/prepare_memory.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from spt.data.sources import iter_unlabeled
from tools.sandbox import REPO


def write_corpus(path: Path, copies: int) -> int:
    texts = [" ".join(t.split()) for source in ("builtin:rotten_tomatoes", "builtin:bbc_news")
             for t in iter_unlabeled(source, "text")]
    with open(path, "w", encoding="utf-8") as handle:
        for copy in range(copies):
            for text in texts:
                handle.write(f"{text} (copy {copy})\n" if copy else f"{text}\n")
    return path.stat().st_size


def run_prepare(workdir: Path, corpus: Path) -> tuple[float, float]:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["unlabeled"] = [str(corpus)]
    (workdir / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    # A fresh interpreter per measurement: RUSAGE_CHILDREN reports the largest child so far.
    code = ("import resource, subprocess, sys, time; start = time.perf_counter(); "
            "subprocess.run([sys.executable, '-m', 'stages.prepare'], check=True, capture_output=True); "
            "print(time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, env=env, check=True, capture_output=True,
                         text=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch) / "repo"
        shutil.copytree(REPO, workdir, ignore=shutil.ignore_patterns(
            ".venv", ".git", "models", "checkpoints", "mlartifacts", "mlflow.db*", "processed", ".dvc"))
        rows = []
        for copies in (1, 10):
            corpus = Path(scratch) / f"corpus_{copies}x.txt"
            size = write_corpus(corpus, copies) / 1e6
            seconds, peak = run_prepare(workdir, corpus)
            rows.append((copies, size, seconds, peak))
        print(f"{'corpus':>7} {'text MB':>8} {'seconds':>8} {'MB/s':>6} {'peak RSS MB':>12}")
        for copies, size, seconds, peak in rows:
            print(f"{copies:>6}x {size:>8.1f} {seconds:>8.1f} {size / seconds:>6.2f} {peak:>12.0f}")
        print(f"peak memory 10x / 1x: {rows[1][3] / rows[0][3]:.2f} (target <= 1.5)")
        # The fixed cost (interpreter start, labeled set, tokenizer training) cancels out here.
        marginal = (rows[1][1] - rows[0][1]) / (rows[1][2] - rows[0][2])
        print(f"marginal throughput from 1x to 10x: {marginal:.2f} MB of text per second")


if __name__ == "__main__":
    main()
