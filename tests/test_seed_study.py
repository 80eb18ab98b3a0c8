"""experiments/seed_study.py: K seeds trained, the spread of their final metrics reported.

The default mode trains the seeds together (one run of num_seeds replicas);
`--mode=sequential` trains one run per seed. Both are run here on the same
seeds: their per-seed results are equal (CPU's `loop` layout runs each replica
with the single run's arithmetic), and each summary is the statistics of its
own per-seed values.
"""

import json
import os
import statistics
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def study(workdir, data_dir, *extra):
    result = subprocess.run(
        [
            sys.executable, os.path.join(ROOT, "experiments", "seed_study.py"),
            f"--workdir={workdir}", "--seeds=0,1",
            f"--config={os.path.join(ROOT, 'experiments', 'smoke.py')}",
            f"--config.dataset.data_dir={data_dir}", "--config.num_train_steps=2", *extra,
        ],  # fmt: skip
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "seed_study.json")) as f:
        return json.load(f), result


def check_summary(summary):
    assert summary["seeds"] == [0, 1]
    for name in ("l1", "psnr", "ssim"):
        values = [summary["per_seed"][s][name] for s in ("0", "1")]
        assert summary[name]["mean"] == statistics.fmean(values)
        assert summary[name]["std"] == statistics.stdev(values)
        half = 12.7062047 * statistics.stdev(values) / np.sqrt(2)  # t(0.975, 1 degree)
        assert summary[name]["ci95"][1] == pytest.approx(statistics.fmean(values) + half, rel=1e-4)


def test_seed_study_together_and_sequential_agree(tmp_path, data_dir):
    together, result = study(tmp_path / "together", data_dir)
    assert together["mode"] == "together"
    check_summary(together)
    with open(tmp_path / "together" / "together" / "metrics.jsonl") as f:
        evals = [json.loads(line) for line in f if '"split"' in line]
    for seed in (0, 1):
        last = [r for r in evals if r["seed"] == seed][-1]
        assert last["step"] == 2 and together["per_seed"][str(seed)]["l1"] == last["l1"]
    assert together["per_seed"]["0"]["l1"] != together["per_seed"]["1"]["l1"]  # the seed matters
    assert "l1: " in result.stdout
    table = (tmp_path / "together" / "seed_study.md").read_text()
    assert "| l1 |" in table and "seed 1" in table

    sequential, _ = study(tmp_path / "sequential", data_dir, "--mode=sequential")
    check_summary(sequential)
    assert together["per_seed"] == sequential["per_seed"]  # CPU's loop layout: bit for bit


def test_together_needs_consecutive_seeds(tmp_path, data_dir):
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "seed_study.py"),
         f"--workdir={tmp_path}", "--seeds=0,2"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode != 0
    assert "--mode=together needs consecutive seeds" in result.stderr
