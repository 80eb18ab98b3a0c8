"""The evaluate command: metrics over a split, metrics.json, the HTML page, FID and KID."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import make_tiny_config
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from test_best_checkpoint import BEST_METRIC, best_line, eval_lines, shared_trained_workdir

from pix2pix_jax import evaluate, report

COMPARED = ("output", "target")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_dir):
    return shared_trained_workdir(tmp_path_factory, data_dir)


def read_png(path):
    return np.asarray(Image.open(path), np.float64) / 255.0


def test_the_page_escapes_what_it_prints():
    rows = [report.Row("<b>", ("a&b.png", 'x".png', "t.png"), {"l1": 0.5})]
    page = report.render_page("<script>", {"split": "<val>", "l1": 0.25}, rows)
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&lt;val&gt;" in page and "0.2500" in page and "0.5000" in page
    assert 'src="a&amp;b.png"' in page and 'src="x&quot;.png"' in page


def test_paper_mode_gives_the_numbers_of_the_evals_during_training(workdir, tmp_path):
    record, out = evaluate.evaluate(workdir, "val", output=str(tmp_path / "out"), progress=False)
    last = eval_lines(workdir)[-1]
    assert {k: record[k] for k in ("split", "step", "mode", "num_images")} == {
        "split": "val", "step": 4, "mode": "paper", "num_images": 8,
    }  # fmt: skip
    for name in ("l1", "psnr", "ssim"):
        assert record[name] == pytest.approx(last[name], rel=1e-6), name
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f) == record
    with open(os.path.join(out, "index.html")) as f:
        page = f.read()
    assert page.count("<tr>") == 1 + len(record) + 1 + 8  # summary table, then one row per image
    for i in range(8):
        for kind in report.COLUMNS:
            assert f'src="images/{i:05d}_{kind}.png"' in page
            assert os.path.isfile(os.path.join(out, "images", f"{i:05d}_{kind}.png"))


def test_deterministic_mode_metrics_agree_with_scikit_image_on_the_saved_images(workdir, tmp_path):
    record, out = evaluate.evaluate(workdir, "test", mode="deterministic", progress=False)
    assert out == os.path.join(workdir, "eval", "test_step4_deterministic")
    assert record["mode"] == "deterministic" and record["num_images"] == 8
    l1, psnr, ssim = [], [], []
    for i in range(8):
        fake, real = (read_png(os.path.join(out, "images", f"{i:05d}_{k}.png")) for k in COMPARED)
        l1.append(np.abs(2 * fake - 2 * real).mean())  # in [-1, 1] units
        psnr.append(peak_signal_noise_ratio(real, fake, data_range=1.0))
        ssim.append(
            structural_similarity(
                real,
                fake,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                channel_axis=-1,
            )  # fmt: skip
        )
    # The saved outputs are rounded to 8 bits; the metrics are of the unrounded outputs.
    assert record["l1"] == pytest.approx(np.mean(l1), abs=2 / 255)
    assert record["psnr"] == pytest.approx(np.mean(psnr), abs=0.05)
    assert record["ssim"] == pytest.approx(np.mean(ssim), abs=5e-3)


def test_the_best_checkpoint_evaluates_to_its_eval_during_training(workdir, tmp_path):
    expected = best_line(eval_lines(workdir), BEST_METRIC)
    record, _ = evaluate.evaluate(
        workdir, "val", checkpoint="best", output=str(tmp_path), progress=False
    )
    assert record["step"] == expected["step"]
    assert record[BEST_METRIC] == pytest.approx(expected[BEST_METRIC], rel=1e-6)


def test_bad_inputs_give_one_clear_error(workdir, tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate.evaluate(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"no checkpoint of step 7 .* \[2, 4\]"):
        evaluate.evaluate(workdir, checkpoint="7")
    with pytest.raises(ValueError, match="mode='noisy' is not one of"):
        evaluate.evaluate(workdir, mode="noisy")
    with pytest.raises(ValueError, match="has no split 'holdout'"):
        evaluate.evaluate(workdir, "holdout", output=str(tmp_path / "x"))
    with pytest.raises(FileNotFoundError, match="inception_weights .*missing.pth"):
        evaluate.evaluate(workdir, inception_weights=str(tmp_path / "missing.pth"))
    garbage = tmp_path / "weights.pth"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="weights.pth"):
        evaluate.evaluate(workdir, inception_weights=str(garbage))


def test_the_command_line(workdir, tmp_path):
    out = tmp_path / "cli"
    args = [sys.executable, "-m", "pix2pix_jax.evaluate", f"--workdir={workdir}", "--split=val"]
    args += ["--checkpoint=2", "--mode=deterministic", f"--output={out}"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "val (8 images, step 2)" in result.stdout
    with open(out / "metrics.json") as f:
        record = json.load(f)
    assert (record["step"], record["mode"], record["split"]) == (2, "deterministic", "val")


def test_training_logs_fid_through_the_same_loop_as_evaluate(tmp_path, tmp_path_factory, data_dir):
    """FID and KID with Inception weights (random, in pytorch-fid's layout), in training's
    evals and from the evaluate command, which must agree: one evaluation loop."""
    import torch_worker

    from pix2pix_jax import trainer

    torch_worker.requires_torch()
    out = torch_worker.results("inception", tmp_path_factory)
    weights = str(out / torch_worker.INCEPTION_WEIGHTS_FILE)
    config = make_tiny_config(data_dir)
    config.num_train_steps, config.eval_every_steps = 2, 2
    config.eval.inception_weights = weights
    config.eval.best_metric = "fid"
    workdir = str(tmp_path / "run")
    trainer.train_and_evaluate(config, workdir)
    lines = eval_lines(workdir)
    assert [r["step"] for r in lines] == [0, 2]
    for line in lines:
        assert np.isfinite(line["fid"]) and np.isfinite(line["kid"]) and line["kid_std"] >= 0
    record, _ = evaluate.evaluate(
        workdir, "val", inception_weights=weights, output=str(tmp_path / "out"), progress=False
    )
    for name in ("l1", "psnr", "ssim", "fid", "kid"):
        assert record[name] == pytest.approx(lines[-1][name], rel=1e-5, abs=1e-6), name
    best = best_line(lines, "fid")
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints_best"))) == [str(best["step"])]
