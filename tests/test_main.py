"""The command line, run as a user runs it, on two (virtual) CPU devices."""

import json
import os
import subprocess
import sys

import pytest


def run_main(workdir, data_dir, *overrides, devices=2):
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, XLA_FLAGS=flags)
    args = [
        sys.executable, "-m", "pix2pix_jax.main", f"--workdir={workdir}",
        "--config.dataset.name=synthetic_facades/res32_small",
        f"--config.dataset.data_dir={data_dir}",
        "--config.image_size=32", "--config.model.ngf=8", "--config.model.ndf=8",
        "--config.batch_size=2", "--config.eval.batch_size=4", "--config.log_every_steps=1",
        "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2",
        *overrides,
    ]  # fmt: skip
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)


def test_two_device_run_from_the_command_line(tmp_path, data_dir):
    result = run_main(tmp_path, data_dir, "--config.num_train_steps=3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 local cpu device(s)" in result.stdout
    # The dataset's own direction (synthetic facades: labels B -> photo A), said and saved.
    assert "Translating input B -> target A (dataset.direction=BtoA)." in result.stdout
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["dataset"]["direction"] == "BtoA"
    assert "[step 3] val:" in result.stdout  # the final evaluation
    with open(tmp_path / "metrics.jsonl") as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if "split" not in r] == [1, 2, 3]
    assert all(r["g_l1"] > 0 for r in records if "split" not in r)
    # The run is resumable: asking for 3 steps again trains nothing more.
    again = run_main(tmp_path, data_dir, "--config.num_train_steps=3")
    assert again.returncode == 0 and "Resuming from the checkpoint of step 3" in again.stdout


@pytest.mark.parametrize(
    "override, message",
    [
        ("--config.batch_size=3", "batch_size=3 must be divisible by the 2 devices"),
        ("--config.dataset.name=no_such_set", "dataset.name='no_such_set'"),
        ("--config.model.norm=group", "model.norm='group'"),
    ],
)
def test_bad_input_gives_one_clear_error(tmp_path, data_dir, override, message):
    result = run_main(tmp_path, data_dir, override)
    assert result.returncode != 0
    assert message in result.stderr
    assert not (tmp_path / "checkpoints").exists()
