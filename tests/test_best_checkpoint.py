"""The best checkpoint kept beside the latest, and loading checkpoints for inference."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import make_tiny_config

from pix2pix_jax import checkpointing, train

BEST_METRIC = "ssim"  # on the tiny run the best ssim is not always the last eval's


def shared_trained_workdir(tmp_path_factory, data_dir) -> str:
    """One tiny trained workdir per test session (evaluate and predict tests use it too)."""
    workdir = tmp_path_factory.getbasetemp() / "trained_workdir"
    if not (workdir / "done").exists():
        config = make_tiny_config(data_dir)
        config.eval.best_metric = BEST_METRIC
        train.train_and_evaluate(config, str(workdir))
        (workdir / "done").touch()
    return str(workdir)


def eval_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("split") == "val"]


def best_line(lines, metric):
    """The first eval line with the best value (strict improvements only replace the best)."""
    sign = -1 if checkpointing.BEST_DIRECTIONS[metric] == "higher" else 1
    return min(lines, key=lambda r: (sign * r[metric], r["step"]))


def kept_steps(workdir, subdir):
    return sorted(int(e) for e in os.listdir(os.path.join(workdir, subdir)) if e.isdigit())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir):
    return shared_trained_workdir(tmp_path_factory, data_dir)


def test_improves_knows_each_metrics_direction():
    assert checkpointing.improves("l1", 0.1, 0.2) and not checkpointing.improves("l1", 0.2, 0.1)
    assert checkpointing.improves("psnr", 21.0, 20.0) and not checkpointing.improves("psnr", 20, 21)
    assert checkpointing.improves("ssim", 0.9, 0.8) and not checkpointing.improves("ssim", 0.8, 0.8)
    assert checkpointing.improves("l1", 5.0, None)
    assert not checkpointing.improves("l1", float("nan"), None)
    with pytest.raises(ValueError, match="eval.best_metric='fid'"):
        checkpointing.improves("fid", 1.0, None)


def test_an_unknown_best_metric_is_rejected_before_training(tiny_config):
    tiny_config.eval.best_metric = "accuracy"
    with pytest.raises(ValueError, match="eval.best_metric='accuracy' is not one of"):
        train.validate_config(tiny_config)
    tiny_config.eval.best_metric = ""  # disabled
    train.validate_config(tiny_config)


def test_the_best_eval_is_kept_beside_the_latest(workdir):
    expected = best_line(eval_lines(workdir), BEST_METRIC)
    assert kept_steps(workdir, checkpointing.BEST_DIR) == [expected["step"]]
    assert kept_steps(workdir, "checkpoints") == [2, 4]  # resuming still reads these
    record = checkpointing.BestCheckpointer(
        os.path.join(workdir, checkpointing.BEST_DIR), BEST_METRIC
    ).record()
    assert record["step"] == expected["step"]
    assert record["value"] == pytest.approx(expected[BEST_METRIC], rel=1e-12)
    config, state, step = checkpointing.restore_for_inference(workdir, "best")
    assert step == expected["step"] == int(state.step)
    assert config.eval.best_metric == BEST_METRIC


def test_the_best_value_carries_over_a_resume(workdir, tmp_path, data_dir):
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    config = make_tiny_config(data_dir)
    config.eval.best_metric = BEST_METRIC
    config.num_train_steps = 6
    train.train_and_evaluate(config, resumed)
    lines = eval_lines(resumed)
    assert [r["step"] for r in lines] == [0, 2, 4, 6]
    assert kept_steps(resumed, checkpointing.BEST_DIR) == [best_line(lines, BEST_METRIC)["step"]]
    assert kept_steps(resumed, "checkpoints") == [4, 6]


def test_restore_for_inference_gives_the_latest_or_a_named_step(workdir):
    config, latest, step = checkpointing.restore_for_inference(workdir)
    assert step == 4 == int(latest.step) and config.image_size == 32
    _, older, step = checkpointing.restore_for_inference(workdir, 2)
    assert step == 2 == int(older.step)
    pairs = zip(jax.tree.leaves(older.g_params), jax.tree.leaves(latest.g_params), strict=True)
    assert not all(np.array_equal(a, b) for a, b in pairs)


def test_restore_for_inference_errors_name_the_problem(workdir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        checkpointing.restore_for_inference(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        checkpointing.restore_for_inference(str(tmp_path))
    with pytest.raises(ValueError, match=r"no checkpoint of step 3 .* it has steps \[2, 4\]"):
        checkpointing.restore_for_inference(workdir, 3)
    with pytest.raises(ValueError, match="checkpoint='newest' is not"):
        checkpointing.restore_for_inference(workdir, "newest")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(os.path.join(workdir, "config.json"), bare / "config.json")
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints"):
        checkpointing.restore_for_inference(str(bare))
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints_best"):
        checkpointing.restore_for_inference(str(bare), "best")
    (bare / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not a usable pix2pix_jax config"):
        checkpointing.restore_for_inference(str(bare))
