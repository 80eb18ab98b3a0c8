"""The best checkpoint kept beside the latest, and loading checkpoints for inference."""

import json
import os
import shutil

import jax
import numpy as np
import pytest
from conftest import make_tiny_config

from pix2pix_jax import assembly, checkpointing, metrics, trainer
from pix2pix_jax import config as config_lib

BEST_METRIC = "ssim"  # on the tiny run the best ssim is not always the last eval's


def shared_trained_workdir(tmp_path_factory, data_dir) -> str:
    """One tiny trained workdir per test session (evaluate and predict tests use it too)."""
    workdir = tmp_path_factory.getbasetemp() / "trained_workdir"
    if not (workdir / "done").exists():
        config = make_tiny_config(data_dir)
        config.eval.best_metric = BEST_METRIC
        trainer.train_and_evaluate(config, str(workdir))
        (workdir / "done").touch()
    return str(workdir)


def eval_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r.get("split") == "val"]


def best_line(lines, metric):
    """The first eval line with the best value (strict improvements only replace the best)."""
    sign = -1 if metrics.BEST_DIRECTIONS[metric] == "higher" else 1
    return min(lines, key=lambda r: (sign * r[metric], r["step"]))


def kept_steps(workdir, subdir):
    return sorted(int(e) for e in os.listdir(os.path.join(workdir, subdir)) if e.isdigit())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir):
    return shared_trained_workdir(tmp_path_factory, data_dir)


def test_improves_knows_each_metrics_direction():
    assert metrics.improves("l1", 0.1, 0.2) and not metrics.improves("l1", 0.2, 0.1)
    assert metrics.improves("psnr", 21.0, 20.0) and not metrics.improves("psnr", 20, 21)
    assert metrics.improves("ssim", 0.9, 0.8) and not metrics.improves("ssim", 0.8, 0.8)
    assert metrics.improves("l1", 5.0, None)
    assert not metrics.improves("l1", float("nan"), None)
    assert metrics.improves("fid", 1.0, 2.0) and metrics.improves("kid", 0.1, 0.2)


def test_a_set_metric_as_best_needs_the_inception_weights(tiny_config):
    tiny_config.eval.best_metric = "fid"
    with pytest.raises(ValueError, match="eval.best_metric='fid' needs eval.inception_weights"):
        config_lib.validate(tiny_config)


def test_an_unknown_best_metric_is_rejected_before_training(tiny_config):
    tiny_config.eval.best_metric = "accuracy"
    with pytest.raises(ValueError, match="eval.best_metric='accuracy' is not one of"):
        config_lib.validate(tiny_config)
    tiny_config.eval.best_metric = ""  # disabled
    config_lib.validate(tiny_config)


def test_the_best_eval_is_kept_beside_the_latest(workdir):
    expected = best_line(eval_lines(workdir), BEST_METRIC)
    assert kept_steps(workdir, checkpointing.BEST_DIR) == [expected["step"]]
    assert kept_steps(workdir, "checkpoints") == [2, 4]  # resuming still reads these
    record = checkpointing.BestCheckpointer(
        os.path.join(workdir, checkpointing.BEST_DIR), BEST_METRIC
    ).record()
    assert record["step"] == expected["step"]
    assert record["value"] == pytest.approx(expected[BEST_METRIC], rel=1e-12)
    config, state, step = assembly.restore_for_inference(workdir, "best")
    assert step == expected["step"] == int(state.step)
    assert config.eval.best_metric == BEST_METRIC


def test_the_best_value_carries_over_a_resume(workdir, tmp_path, data_dir):
    resumed = str(tmp_path / "resumed")
    shutil.copytree(workdir, resumed)
    config = make_tiny_config(data_dir)
    config.eval.best_metric = BEST_METRIC
    config.num_train_steps = 6
    trainer.train_and_evaluate(config, resumed)
    lines = eval_lines(resumed)
    assert [r["step"] for r in lines] == [0, 2, 4, 6]
    assert kept_steps(resumed, checkpointing.BEST_DIR) == [best_line(lines, BEST_METRIC)["step"]]
    assert kept_steps(resumed, "checkpoints") == [4, 6]


def test_restore_for_inference_gives_the_latest_or_a_named_step(workdir):
    config, latest, step = assembly.restore_for_inference(workdir)
    assert step == 4 == int(latest.step) and config.image_size == 32
    _, older, step = assembly.restore_for_inference(workdir, 2)
    assert step == 2 == int(older.step)
    pairs = zip(jax.tree.leaves(older.g_params), jax.tree.leaves(latest.g_params), strict=True)
    assert not all(np.array_equal(a, b) for a, b in pairs)


def test_restore_for_inference_errors_name_the_problem(workdir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        assembly.restore_for_inference(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        assembly.restore_for_inference(str(tmp_path))
    with pytest.raises(ValueError, match=r"no checkpoint of step 3 .* it has steps \[2, 4\]"):
        assembly.restore_for_inference(workdir, 3)
    with pytest.raises(ValueError, match="checkpoint='newest' is not"):
        assembly.restore_for_inference(workdir, "newest")
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(os.path.join(workdir, "config.json"), bare / "config.json")
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints"):
        assembly.restore_for_inference(str(bare))
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*checkpoints_best"):
        assembly.restore_for_inference(str(bare), "best")
    (bare / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json: not a usable pix2pix_jax config"):
        assembly.restore_for_inference(str(bare))


def test_a_checkpoint_of_the_previous_release_is_refused_with_the_reason(workdir, tmp_path):
    old = str(tmp_path / "old_release")
    shutil.copytree(workdir, old)
    for step in ("2", "4"):  # 0.1 wrote the state and data items, no meta item
        shutil.rmtree(os.path.join(old, "checkpoints", step, "meta"))
    with pytest.raises(ValueError, match=r"written by pix2pix_jax 0\.1.*cannot restore it"):
        assembly.restore_for_inference(old)
    config = config_lib.load_workdir_config(old)
    with pytest.raises(ValueError, match=r"checkpoints/4 was written by pix2pix_jax 0\.1"):
        trainer.train_and_evaluate(config, old)
    assert sorted(os.listdir(os.path.join(old, "checkpoints"))) == ["2", "4"]  # nothing lost
