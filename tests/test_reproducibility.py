"""Reproducibility and fault tolerance, each promise driven as a user would meet it.

Kill points tested (each against an uninterrupted run of the same length, on
the final parameters, bitwise): SIGKILL between steps at a random-ish step,
SIGKILL while an async checkpoint is being written, a leftover half-written
checkpoint directory, SIGTERM and SIGINT (checkpoint at the current step, exit 0).
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest

from pix2pix_jax import checkpointing, runtime

STEPS = 8


def cli_args(workdir, data_dir, *overrides):
    return [
        sys.executable, "-m", "pix2pix_jax.main", f"--workdir={workdir}",
        "--config.dataset.name=synthetic_facades/res32_small",
        f"--config.dataset.data_dir={data_dir}",
        "--config.image_size=32", "--config.model.ngf=8", "--config.model.ndf=8",
        "--config.batch_size=2", "--config.eval.batch_size=8", "--config.log_every_steps=1",
        f"--config.eval_every_steps={STEPS}", "--config.checkpoint_every_steps=2",
        f"--config.num_train_steps={STEPS}", "--config.max_checkpoints_to_keep=3",
        *overrides,
    ]  # fmt: skip


def run_cli(workdir, data_dir, *overrides):
    result = subprocess.run(
        cli_args(workdir, data_dir, *overrides), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def final_state(workdir):
    """The latest checkpoint's train state and data state, as host arrays."""
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 3)
    try:
        step = checkpointer.latest_step()
        restored = checkpointer.manager.restore(step)
        return step, {"state": restored["state"], "data": restored["data"]}
    finally:
        checkpointer.close()


def assert_same_state(a, b):
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def train_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if '"split"' not in line]


def wait_for_step(process, workdir, step, timeout=300):
    """Block until metrics.jsonl has a train line at `step` or later."""
    path = os.path.join(workdir, "metrics.jsonl")
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[1][-3000:]
        if os.path.exists(path) and any(r["step"] >= step for r in train_lines(workdir)):
            return
        time.sleep(0.05)
    raise TimeoutError(f"step {step} not reached")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """An uninterrupted CLI run of STEPS steps: its final checkpoint and metrics."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    run_cli(workdir, data_dir)
    step, state = final_state(workdir)
    assert step == STEPS
    return state, train_lines(workdir)


def losses(lines):
    return [{k: v for k, v in r.items() if k != "images_per_second"} for r in lines]


def test_rerun_is_bit_identical(reference, tmp_path, data_dir):
    run_cli(str(tmp_path), data_dir)
    step, state = final_state(str(tmp_path))
    assert step == STEPS
    assert_same_state(reference[0], state)
    assert losses(train_lines(str(tmp_path))) == losses(reference[1])


def private_cache_env(tmp_path) -> dict:
    """The environment of a run this test interrupts: a compilation cache of its own.

    JAX writes a cache entry in place, so a run killed mid-write would leave a
    torn entry for every later run that shares the cache to load. It starts as
    a copy of the shared one, so the run still finds what others compiled.
    """
    private = str(tmp_path / "private_jax_cache")
    shutil.copytree(os.environ["JAX_COMPILATION_CACHE_DIR"], private)
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": private}


def test_sigkill_mid_training_then_resume(reference, tmp_path, data_dir):
    workdir = str(tmp_path)
    process = subprocess.Popen(cli_args(workdir, data_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env=private_cache_env(tmp_path))  # fmt: skip
    wait_for_step(process, workdir, 5)
    process.kill()
    process.wait()
    assert final_state(workdir)[0] < STEPS  # it really was interrupted
    run_cli(workdir, data_dir)
    step, state = final_state(workdir)
    assert step == STEPS
    assert_same_state(reference[0], state)


KILL_DURING_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    from pix2pix_jax import checkpointing, main

    original = checkpointing.Checkpointer.save

    def save_then_die(self, step, state, data_state):
        original(self, step, state, data_state)  # returns while the write goes on
        if step == 4:
            os.kill(os.getpid(), signal.SIGKILL)

    checkpointing.Checkpointer.save = save_then_die
    sys.argv = ["pix2pix_jax.main"] + sys.argv[1:]
    main.run()
    """
)


def test_sigkill_during_a_checkpoint_write_then_resume(reference, tmp_path, data_dir):
    workdir = str(tmp_path)
    args = [sys.executable, "-c", KILL_DURING_SAVE] + cli_args(workdir, data_dir)[3:]
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=600, env=private_cache_env(tmp_path)
    )
    assert result.returncode == -signal.SIGKILL
    entries = os.listdir(os.path.join(workdir, "checkpoints"))
    complete = sorted(int(e) for e in entries if e.isdigit())
    assert complete and complete[-1] in (2, 4)
    if complete[-1] == 2:  # the usual case: step 4's write was cut short
        assert any(e.startswith("4") and not e.isdigit() for e in entries), entries
    run_cli(workdir, data_dir)
    step, state = final_state(workdir)
    assert step == STEPS
    assert_same_state(reference[0], state)


def test_half_written_checkpoint_is_never_restored(reference, tmp_path, data_dir):
    workdir = str(tmp_path)
    run_cli(workdir, data_dir, "--config.num_train_steps=4")
    checkpoints = os.path.join(workdir, "checkpoints")
    # What a writer killed before its final rename leaves behind for step 6.
    partial = os.path.join(checkpoints, "6.orbax-checkpoint-tmp-1234567")
    os.makedirs(os.path.join(partial, "state"))
    with open(os.path.join(partial, "state", "garbage"), "wb") as f:
        f.write(b"\0" * 100)
    result = run_cli(workdir, data_dir)
    assert "Resuming from the checkpoint of step 4" in result.stdout
    step, state = final_state(workdir)
    assert step == STEPS
    assert_same_state(reference[0], state)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_preemption_signal_checkpoints_and_exits_cleanly(reference, tmp_path, data_dir, signum):
    workdir = str(tmp_path)
    process = subprocess.Popen(cli_args(workdir, data_dir), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env=private_cache_env(tmp_path))  # fmt: skip
    wait_for_step(process, workdir, 3)
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    stopped = int(re.search(r"Stopping at step (\d+) on request", stdout).group(1))
    assert 3 <= stopped < STEPS
    assert final_state(workdir)[0] == stopped  # saved at the step it stopped, not before
    run_cli(workdir, data_dir)
    step, state = final_state(workdir)
    assert step == STEPS
    assert_same_state(reference[0], state)
    assert losses(train_lines(workdir)) == losses(reference[1])


def test_deterministic_switch_sets_the_xla_gpu_flag(monkeypatch, tiny_config):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    tiny_config.deterministic = True
    runtime.configure(tiny_config)
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_gpu_deterministic_ops=true"
    runtime.configure(tiny_config)  # idempotent
    assert os.environ["XLA_FLAGS"].count("deterministic_ops") == 1
