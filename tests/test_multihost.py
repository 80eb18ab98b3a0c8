"""Two processes on localhost, one CPU device each, training as one job (gloo collectives)."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from pix2pix_jax import checkpointing


def free_port():
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def launch(workdir, data_dir, steps, port):
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=1"
    env = dict(os.environ, XLA_FLAGS=flags)
    common = [
        "--config.dataset.name=synthetic_facades/res32_small",
        f"--config.dataset.data_dir={data_dir}",
        "--config.image_size=32", "--config.model.ngf=8", "--config.model.ndf=8",
        "--config.batch_size=2", "--config.eval.batch_size=2", "--config.log_every_steps=1",
        "--config.eval_every_steps=2", "--config.checkpoint_every_steps=2",
        f"--config.num_train_steps={steps}", "--config.distributed.initialize=True",
        f"--config.distributed.coordinator_address=localhost:{port}",
        "--config.distributed.num_processes=2",
    ]  # fmt: skip
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pix2pix_jax.main",
                f"--workdir={workdir}",
                *common,
                f"--config.distributed.process_id={i}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


def test_two_processes_train_checkpoint_and_resume(tmp_path, data_dir):
    workdir = str(tmp_path)
    outs = launch(workdir, data_dir, 2, free_port())
    assert "process 0 of 2, 1 local cpu device(s)" in outs[0]
    assert "process 1 of 2" in outs[1]
    outs = launch(workdir, data_dir, 4, free_port())
    assert all("Resuming from the checkpoint of step 2" in out for out in outs)
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    # Written once (by process 0), for the whole job.
    assert [r["step"] for r in records if "split" not in r] == [1, 2, 3, 4]
    evals = [r for r in records if "split" in r]
    assert [r["step"] for r in evals] == [0, 2, 4]
    assert all(np.isfinite(r["l1"]) for r in evals)
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 2)
    try:
        assert checkpointer.latest_step() == 4
        state = checkpointer.manager.restore(4)["state"]
        assert int(state["step"]) == 4
    finally:
        checkpointer.close()
