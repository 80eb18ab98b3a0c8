"""A run whose workdir is in a bucket: `gs://` against a local GCS emulator.

The run is started with the command line into `gs://BUCKET/run`, stopped with
SIGTERM, and resumed by the same command; its final state and its training
curve must equal, bitwise, those of an uninterrupted run on a local disk.
evaluate and predict then read the model from the bucket and write into it.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import hostile_files
import jax
import numpy as np
import pytest
from gcs_emulator import BUCKET, gcs  # noqa: F401  (the fixture)

from pix2pix_jax import (
    checkpointing,
    datasets,
    evaluate,
    paths,
    predict,
    torch_weights,
    trainer,
    writers,
)
from pix2pix_jax import config as config_lib
from pix2pix_jax import workdir as workdir_lib
from pix2pix_jax.configs import default
from pix2pix_jax.errors import ConfigError, MissingFileError, WorkdirError

STEPS = 6
OVERRIDES = {
    "dataset.name": "synthetic_facades/res32_small", "image_size": 32, "model.ngf": 8,
    "model.ndf": 8, "batch_size": 2, "eval.batch_size": 8, "log_every_steps": 1,
    "eval_every_steps": STEPS, "checkpoint_every_steps": 2, "num_train_steps": STEPS,
    "max_checkpoints_to_keep": 3,
}  # fmt: skip


def cli_args(workdir: str, data_dir: str) -> list[str]:
    flags = [f"--config.{k}={v}" for k, v in OVERRIDES.items()]
    return [sys.executable, "-m", "pix2pix_jax.main", f"--workdir={workdir}",
            f"--config.dataset.data_dir={data_dir}", *flags]  # fmt: skip


def make_config(data_dir: str):
    config = default.get_config()
    for field, value in {**OVERRIDES, "dataset.data_dir": data_dir}.items():
        *parents, name = field.split(".")
        node = config
        for part in parents:
            node = node[part]
        node[name] = value
    return config


def latest_state(workdir: str) -> tuple[int, dict]:
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 3)
    try:
        step = checkpointer.latest_step()
        restored = checkpointer.manager.restore(step)
        return step, {"state": restored["state"], "data": restored["data"]}
    finally:
        checkpointer.close()


def train_losses(workdir: str) -> list[dict]:
    lines = paths.read_text(os.path.join(workdir, "metrics.jsonl")).splitlines()
    records = [json.loads(line) for line in lines if '"split"' not in line]
    return [{k: v for k, v in r.items() if k != "images_per_second"} for r in records]


def wait_for(path: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            stderr = process.communicate()[1]
            raise AssertionError(stderr[:3000] + "\n...\n" + stderr[-3000:])
        if paths.exists(path):
            return
        time.sleep(0.1)
    raise TimeoutError(f"{path} did not appear")


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data_dir):
    """An uninterrupted run on a local disk (in this process)."""
    workdir = str(tmp_path_factory.mktemp("local_reference"))
    trainer.train_and_evaluate(make_config(data_dir), workdir)
    return workdir


@pytest.fixture(scope="module")
def cloud_run(gcs, data_dir, tmp_path_factory):  # noqa: F811
    """gs://BUCKET/run: started, stopped by SIGTERM after its first checkpoint, resumed."""
    workdir = f"gs://{BUCKET}/run"
    cwd = str(tmp_path_factory.mktemp("cwd"))  # where a "gs:" folder would appear
    process = subprocess.Popen(cli_args(workdir, data_dir), cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(f"{workdir}/checkpoints/2/_CHECKPOINT_METADATA", process)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    stopped = int(re.search(r"Stopping at step (\d+) on request", stdout).group(1))
    assert 2 <= stopped < STEPS
    assert latest_state(workdir)[0] == stopped
    rerun = subprocess.run(cli_args(workdir, data_dir), cwd=cwd, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"Resuming from the checkpoint of step {stopped}" in rerun.stdout
    assert os.listdir(cwd) == []
    return workdir


# The two training runs are most of this file's time; one test uses them, so that however
# pytest-xdist spreads the file's tests over workers, they run once.
def test_a_bucket_run_resumes_exactly_and_serves_evaluate_and_predict(
    reference, cloud_run, tmp_path
):
    check_resumed_equals_uninterrupted(reference, cloud_run)
    check_the_whole_workdir_is_in_the_bucket(cloud_run)
    check_evaluate_and_predict(reference, cloud_run, tmp_path)


def check_resumed_equals_uninterrupted(reference, cloud_run):
    step, state = latest_state(cloud_run)
    assert step == STEPS
    expected = latest_state(reference)[1]
    for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # metrics.jsonl: one object, whole lines, the curve of the uninterrupted run.
    assert train_losses(cloud_run) == train_losses(reference)


def check_the_whole_workdir_is_in_the_bucket(cloud_run):
    names = paths.listdir(cloud_run)
    assert {"config.json", "metrics.jsonl", "checkpoints", "checkpoints_best", "samples"} <= set(
        names
    )
    assert any(n.startswith("events.out.tfevents.") for n in names)  # TensorBoard
    assert config_lib.load_workdir_config(cloud_run).num_train_steps == STEPS
    samples = paths.listdir(f"{cloud_run}/samples")
    assert {"step_0000000.png", f"step_{STEPS:07d}.png"} <= set(samples)
    evals = [r for r in map(json.loads, paths.read_text(f"{cloud_run}/metrics.jsonl").splitlines())
             if "split" in r]  # fmt: skip
    assert [r["step"] for r in evals] == [0, STEPS]


def check_evaluate_and_predict(reference, cloud_run, tmp_path):
    record, out = evaluate.evaluate(cloud_run, split="test", progress=False)
    expected, _ = evaluate.evaluate(reference, split="test", progress=False)
    assert record == expected  # the same model, bit for bit
    assert out.startswith(f"gs://{BUCKET}/run/eval/")
    assert json.loads(paths.read_text(f"{out}/metrics.json")) == record
    assert "<table>" in paths.read_text(f"{out}/index.html")
    assert paths.is_file(f"{out}/images/00000_output.png")
    # predict: inputs in the bucket, outputs to the bucket; the same images as locally.
    grid = paths.read_bytes(f"{cloud_run}/samples/step_0000000.png")
    paths.write_bytes(f"gs://{BUCKET}/inputs/a.png", grid)
    (tmp_path / "inputs").mkdir()
    (tmp_path / "inputs" / "a.png").write_bytes(grid)
    written = predict.predict(cloud_run, f"gs://{BUCKET}/inputs", f"gs://{BUCKET}/out",
                              progress=False)  # fmt: skip
    assert written == [f"gs://{BUCKET}/out/a.png"]
    local = predict.predict(reference, str(tmp_path / "inputs"), str(tmp_path / "out"),
                            progress=False)  # fmt: skip
    assert paths.read_bytes(written[0]) == paths.read_bytes(local[0])


def test_a_missing_bucket_is_one_line_before_training(gcs, data_dir):  # noqa: F811
    with pytest.raises(WorkdirError) as error:
        trainer.train_and_evaluate(make_config(data_dir), "gs://no-such-bucket/run")
    message = str(error.value)
    assert "gs://no-such-bucket/run" in message and "\n" not in message
    assert "bucket exists" in message
    with pytest.raises(WorkdirError, match="is a file"):
        paths.write_text(f"gs://{BUCKET}/a_file", "x")
        workdir_lib.prepare(f"gs://{BUCKET}/a_file")


def test_metrics_object_keeps_every_line_through_each_checkpoint(gcs, monkeypatch):  # noqa: F811
    workdir = f"gs://{BUCKET}/metrics_layout"
    path = f"{workdir}/metrics.jsonl"
    monkeypatch.setattr(writers, "UPLOAD_SECONDS", 3600.0)  # only the forced uploads
    writer = writers.MetricWriter(workdir, keep_through=-1, sync_every_steps=4)
    writer.write(1, {"g_l1": 1.0})  # the first upload: no earlier one to wait for
    for step in (2, 3):
        writer.write(step, {"g_l1": 1.0})
    assert [json.loads(x)["step"] for x in paths.read_text(path).splitlines()] == [1]
    writer.write(4, {"g_l1": 1.0})  # a checkpoint step: uploaded at once
    writer.write(5, {"g_l1": 1.0})
    writer.write(5, {"l1": 0.5}, split="val")  # an eval line: uploaded at once
    assert [json.loads(x)["step"] for x in paths.read_text(path).splitlines()] == [1, 2, 3, 4, 5, 5]
    writer.close()
    # A run resumed from step 4 drops the later lines: the object is rewritten without them.
    writers.MetricWriter(workdir, keep_through=4, sync_every_steps=4).close()
    assert [json.loads(x)["step"] for x in paths.read_text(path).splitlines()] == [1, 2, 3, 4]


def test_weights_and_dataset_folders_from_uris(gcs, tmp_path):  # noqa: F811
    data = np.arange(6, dtype=np.float32)
    pth = hostile_files.pth({"w": ("0", 6, 0, (2, 3), (3, 1))},
                            {"0": hostile_files.stored(data.tobytes())})  # fmt: skip
    paths.write_bytes(f"gs://{BUCKET}/weights/g.pth", pth)
    loaded = torch_weights.load_state_dict(f"gs://{BUCKET}/weights/g.pth")
    np.testing.assert_array_equal(loaded["w"], data.reshape(2, 3))
    with pytest.raises(MissingFileError, match=f"gs://{BUCKET}/weights/none.pth"):
        torch_weights.load_state_dict(f"gs://{BUCKET}/weights/none.pth")
    for name in ("train/1.png", "train/2.png"):
        paths.write_bytes(f"gs://{BUCKET}/pairs/{name}", hostile_files.png_zeros(8, 4))
    local = paths.local_copy(f"gs://{BUCKET}/pairs", str(tmp_path / "cache"))
    assert local == str(tmp_path / "cache" / BUCKET / "pairs")
    assert sorted(os.listdir(os.path.join(local, "train"))) == ["1.png", "2.png"]


def test_a_data_dir_uri_says_to_copy_or_mount():
    with pytest.raises(ConfigError, match="gs://b/tfds.*local disk.*gcsfuse"):
        datasets.check_data_dir("gs://b/tfds")
    config = default.get_config()
    config.dataset.data_dir = "gs://b/tfds"
    with pytest.raises(ConfigError, match="array_record"):
        config_lib.validate(config)
