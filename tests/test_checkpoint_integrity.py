"""Checkpoints prove their integrity, and a full disk ends a run in one line.

The unit tests damage checkpoints of a small pytree; the run tests share one
tiny training whose disk "fills" during its step-4 checkpoint (a file-size
limit makes every larger write fail with EFBIG, as ENOSPC would), then
resume it, then damage its latest checkpoint and resume again.
"""

import errno
import glob
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from conftest import make_tiny_config

from pix2pix_jax import checkpointing, trainer, writers
from pix2pix_jax import workdir as workdir_lib
from pix2pix_jax.errors import CheckpointError, DiskFullError

RNG = np.random.default_rng(0)
# Random words do not compress, so the array's bytes lie verbatim in the data file.
STATE = {"w": RNG.integers(0, 2**32, (64, 64), dtype=np.uint32), "step": np.full((), 2, np.int32)}
TEMPLATE = {"w": np.zeros((64, 64), np.uint32), "step": np.zeros((), np.int32)}


@pytest.fixture
def saved(tmp_path):
    """A workdir with one checkpoint (step 2) of STATE, written the way training writes it."""
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), 2)
    checkpointer.save(2, STATE, {"position": 7})
    checkpointer.close()
    return str(tmp_path)


def restore(workdir):
    checkpointer = checkpointing.Checkpointer(os.path.join(workdir, "checkpoints"), 2)
    try:
        return checkpointer.restore(2, TEMPLATE)
    finally:
        checkpointer.close()


def flip_one_bit(workdir):
    """Flip one bit inside the bytes of STATE['w'] where the checkpoint stores them."""
    needle = STATE["w"].tobytes()[4000:4064]
    for path in glob.glob(f"{workdir}/checkpoints/2/state/**/d/*", recursive=True):
        data = bytearray(pathlib.Path(path).read_bytes())
        if (at := data.find(needle)) >= 0:
            data[at + 10] ^= 0x04
            pathlib.Path(path).write_bytes(data)
            return
    raise AssertionError("the array's bytes were not found")


def test_an_intact_checkpoint_restores_bitwise(saved):
    state, data = restore(saved)
    np.testing.assert_array_equal(state["w"], STATE["w"])
    assert data == {"position": 7}


def test_a_flipped_bit_in_the_arrays_is_refused_by_resume_and_by_readers(saved):
    flip_one_bit(saved)
    expected = f"{saved}/checkpoints/2 is damaged: its arrays do not match the checksum"
    with pytest.raises(CheckpointError, match=expected):
        restore(saved)
    with pytest.raises(CheckpointError, match=expected):  # evaluate and predict read this way
        checkpointing.restore_state(saved, TEMPLATE)


def test_the_checksum_covers_the_data_iterator_position(saved):
    with open(f"{saved}/checkpoints/2/data/metadata", "w") as f:
        json.dump({"position": 8}, f)  # well-formed, but not what was saved
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        restore(saved)


@pytest.mark.parametrize(
    "name", ["state/_METADATA", "_CHECKPOINT_METADATA", "data/metadata", "meta/metadata"]
)
def test_damaged_metadata_is_refused_naming_the_file(saved, name):
    path = f"{saved}/checkpoints/2/{name}"
    with open(path, "rb") as f:
        text = f.read()
    with open(path, "wb") as f:
        f.write(text[: len(text) // 2])  # torn: no longer JSON
    with pytest.raises(CheckpointError, match=f"^{re.escape(path)}: damaged checkpoint metadata"):
        restore(saved)


def test_a_damaged_best_checkpoint_is_not_needed_to_start(tmp_path, capsys):
    directory = str(tmp_path / checkpointing.BEST_DIR)
    best = checkpointing.BestCheckpointer(directory, "l1")
    assert best.update(2, STATE, {"l1": 0.5})
    best.close()
    with open(f"{directory}/2/best/metadata", "w") as f:
        f.write('{"metric": "l1", "val')
    best = checkpointing.BestCheckpointer(directory, "l1")
    assert best.best is None  # the next eval replaces it
    assert f"{directory}/2/best/metadata: damaged checkpoint metadata" in capsys.readouterr().out
    assert best.update(4, STATE, {"l1": 0.6})
    best.close()


def test_resumed_metrics_drop_the_lines_after_the_checkpoint_and_a_torn_one(tmp_path):
    lines = [{"step": s, "g_l1": 0.1} for s in (1, 2, 3, 4)] + [{"step": 2, "split": "val"}]
    with open(tmp_path / "metrics.jsonl", "w") as f:
        f.writelines(json.dumps(line) + "\n" for line in lines)
        f.write('{"step": 5, "g_')  # a kill mid-write
    writer = writers.MetricWriter(str(tmp_path), keep_through=2)
    writer.write(3, {"g_l1": 0.2})
    writer.close()
    with open(tmp_path / "metrics.jsonl") as f:
        kept = [json.loads(line) for line in f]
    assert [(r["step"], r.get("split")) for r in kept] == [
        (1, None),
        (2, None),
        (2, "val"),
        (3, None),
    ]


# --- a run whose disk fills, resumed, then resumed from a damaged latest checkpoint ----------

FULL_DISK_AT_STEP_4 = textwrap.dedent(
    """
    import resource, signal, sys
    import jax
    from pix2pix_jax import checkpointing, main

    original = checkpointing.Checkpointer.save

    def save_on_a_full_disk(self, step, state, data_state):
        if step == 4:  # from here on no file grows past 200 kB: larger writes fail (EFBIG)
            jax.config.update("jax_enable_compilation_cache", False)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, resource.RLIM_INFINITY))
        original(self, step, state, data_state)

    checkpointing.Checkpointer.save = save_on_a_full_disk
    sys.argv = ["pix2pix_jax.main"] + sys.argv[1:]
    main.run()
    """
)
CLI_FIELDS = (
    "dataset.name", "dataset.data_dir", "image_size", "batch_size", "num_train_steps",
    "model.ngf", "model.ndf", "log_every_steps", "eval_every_steps", "checkpoint_every_steps",
    "eval.batch_size", "eval.num_samples",
)  # fmt: skip


def cli_overrides(config):
    values = {field: config for field in CLI_FIELDS}
    for field in CLI_FIELDS:
        for part in field.split("."):
            values[field] = values[field][part]
    return [f"--config.{field}={value}" for field, value in values.items()]


@pytest.fixture(scope="module")
def full_disk_run(tmp_path_factory, data_dir):
    """(workdir, finished process) of a tiny run whose disk fills at its step-4 checkpoint."""
    workdir = str(tmp_path_factory.mktemp("full_disk"))
    args = [sys.executable, "-c", FULL_DISK_AT_STEP_4, f"--workdir={workdir}"]
    args += cli_overrides(make_tiny_config(data_dir))
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    return workdir, result


def test_a_full_disk_ends_in_one_line_and_reports_nothing_unsaved(full_disk_run):
    workdir, result = full_disk_run
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-5000:]
    assert not re.search(r"^E\d{4} ", result.stderr, re.M), result.stderr[-5000:]  # logged errors
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and result.stderr.rstrip().endswith(lines[0]), result.stderr[-5000:]
    assert re.match(
        rf"pix2pix_jax: error: disk full writing {workdir}/checkpoints(_best)?/4\S* \(file too "
        rf"large; a write of [\d.]+ MiB failed; [\d.]+ GiB free there\); the last complete "
        rf"checkpoint is {workdir}/checkpoints/2 \([\d.]+ MiB, about what each checkpoint "
        rf"needs\), from which a rerun resumes$",
        lines[0],
    ), lines[0]
    assert "[step 2]" in result.stdout
    assert not re.search(r"\[step 4\][^\n]*saved", result.stdout)  # its best save failed


def copy_of(workdir, tmp_path):
    copy = str(tmp_path / "workdir")
    shutil.copytree(workdir, copy)
    return copy


@pytest.fixture(scope="module")
def resumed(full_disk_run, tmp_path_factory, data_dir):
    """(workdir, final state, stdout) of the full-disk run resumed with room to write."""
    workdir = copy_of(full_disk_run[0], tmp_path_factory.mktemp("resumed"))
    capture = tmp_path_factory.getbasetemp() / "resumed_stdout.txt"
    with open(capture, "w") as out:
        saved_stdout, sys.stdout = sys.stdout, out
        try:
            state = trainer.train_and_evaluate(make_tiny_config(data_dir), workdir)
        finally:
            sys.stdout = saved_stdout
    return workdir, state, capture.read_text()


def test_the_full_disk_run_resumes_from_its_last_complete_checkpoint_without_duplicates(resumed):
    workdir, _, stdout = resumed
    assert "Resuming from the checkpoint of step 2." in stdout
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        records = [json.loads(line) for line in f]
    assert [r["step"] for r in records if "split" not in r] == [2, 4]
    assert [r["step"] for r in records if "split" in r] == [0, 2, 4]
    assert sorted(int(e) for e in os.listdir(f"{workdir}/checkpoints") if e.isdigit()) == [2, 4]


def damage_latest(workdir):
    """Overwrite 64 bytes in the middle of the step-4 checkpoint's largest array file."""
    files = glob.glob(f"{workdir}/checkpoints/4/state/**/d/*", recursive=True)
    path = max(files, key=os.path.getsize)
    data = bytearray(pathlib.Path(path).read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(b ^ 0xFF for b in data[middle : middle + 64])
    pathlib.Path(path).write_bytes(data)


def test_a_damaged_latest_checkpoint_is_refused_and_the_run_falls_back(
    resumed, tmp_path, data_dir, capsys
):
    workdir = copy_of(resumed[0], tmp_path)
    damage_latest(workdir)
    state = trainer.train_and_evaluate(make_tiny_config(data_dir), workdir)
    out = capsys.readouterr().out
    assert re.search(
        rf"Refused: {workdir}/checkpoints/4 is damaged: [^\n]*; moved it to "
        rf"{workdir}/checkpoints_damaged/4, falling back to an older one\.",
        out,
    ), out
    assert "Resuming from the checkpoint of step 2." in out
    for a, b in zip(jax.tree.leaves(resumed[1]), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise, as uninterrupted


def test_a_damaged_latest_checkpoint_stops_the_run_when_asked(resumed, tmp_path, data_dir):
    workdir = copy_of(resumed[0], tmp_path)
    damage_latest(workdir)
    config = make_tiny_config(data_dir)
    config.damaged_checkpoint = "stop"
    with pytest.raises(CheckpointError, match=f"^{workdir}/checkpoints/4 is damaged"):
        trainer.train_and_evaluate(config, workdir)
    assert os.path.isdir(f"{workdir}/checkpoints/4")  # left where it was


def test_a_python_write_failing_with_enospc_is_one_line_too(tmp_path):
    failure = OSError(errno.ENOSPC, "No space left on device", f"{tmp_path}/metrics.jsonl")
    with pytest.raises(DiskFullError) as caught, workdir_lib.one_line_disk_full(str(tmp_path)):
        try:
            raise failure
        except OSError as e:
            raise RuntimeError("a writer gave up") from e  # found down the chain
    assert re.fullmatch(
        rf"disk full writing {tmp_path}/metrics.jsonl \(No space left on device; "
        rf"[\d.]+ [GM]iB free there\)",
        str(caught.value),
    )
    with pytest.raises(ValueError), workdir_lib.one_line_disk_full(str(tmp_path)):
        raise ValueError("not a disk problem")  # passes unchanged
