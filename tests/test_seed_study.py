"""experiments/seed_study.py: K seeds trained, the spread of their final metrics reported."""

import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_seed_study_reports_mean_and_std(tmp_path, data_dir):
    result = subprocess.run(
        [
            sys.executable, os.path.join(ROOT, "experiments", "seed_study.py"),
            f"--workdir={tmp_path}", "--seeds=0,1",
            f"--config={os.path.join(ROOT, 'experiments', 'smoke.py')}",
            f"--config.dataset.data_dir={data_dir}", "--config.num_train_steps=2",
        ],  # fmt: skip
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "seed_study.json") as f:
        summary = json.load(f)
    assert summary["seeds"] == [0, 1]
    finals = {}
    for seed in (0, 1):
        with open(tmp_path / f"seed_{seed}" / "metrics.jsonl") as f:
            last = [json.loads(line) for line in f if '"split"' in line][-1]
        assert last["step"] == 2
        finals[seed] = last
        assert summary["per_seed"][str(seed)]["l1"] == last["l1"]
    assert finals[0]["l1"] != finals[1]["l1"]  # the seed matters
    for name in ("l1", "psnr", "ssim"):
        values = [finals[0][name], finals[1][name]]
        assert summary[name]["mean"] == statistics.fmean(values)
        assert summary[name]["std"] == statistics.stdev(values)
    assert "l1: " in result.stdout
