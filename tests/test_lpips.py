"""LPIPS: the Flax network against a PyTorch re-expression of the lpips package, and its uses.

The PyTorch side (tests/torch_reference.py `LPIPS`, torchvision's alexnet and
vgg16 layouts with random weights, heads saved in the released files' legacy
format) runs in the child process of torch_worker, which writes the .pth files.
"""

import json
import os

import jax
import numpy as np
import pytest
import torch_worker
from PIL import Image

from pix2pix_jax import evaluate, lpips, trainer
from pix2pix_jax.errors import ConfigError, DataError

torch_worker.requires_torch()
torch_worker.want("perceptual")
BACKBONES = {"alex": "alexnet.pth", "vgg": "vgg16.pth"}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The child's output folder (its .pth files) and arrays."""
    torch_before = torch_worker.torch_loaded()
    out = torch_worker.results("perceptual", tmp_path_factory)
    yield out, torch_worker.load_arrays(out)
    torch_worker.assert_torch_not_loaded_since(torch_before)


def load(out, kind):
    return lpips.load_lpips(str(out / f"{kind}.pth"), str(out / BACKBONES[kind]))


@jax.jit
def distances_and_gradient(params, x, y):
    """LPIPS per pair and the gradient of their sum with respect to `x`, in one program."""
    return jax.value_and_grad(lambda v: lpips.distance(params, v, y).sum(), has_aux=False)(x)


@pytest.mark.parametrize("kind", list(BACKBONES))
def test_distances_and_gradients_match_the_lpips_package(reference, kind):
    out, arrays = reference
    inputs = torch_worker.INPUTS["perceptual"]()
    params = load(out, kind)
    assert lpips.kind_of(params) == kind
    x, y = inputs["x"], inputs["y"]
    expected = arrays[f"lpips/{kind}/distance"]
    assert expected.shape == (2,) and np.all(expected > 0.1)
    # The evaluation path (jitted, full float32) on float images, then on uint8 ones as
    # saved, mapped to [-1, 1] as lpips.im2tensor does.
    distance_fn = lpips.make_distance_fn(params)
    np.testing.assert_allclose(distance_fn((x + 1) * 127.5, (y + 1) * 127.5), expected, rtol=1e-4)
    got = distance_fn(inputs["u8_a"], inputs["u8_b"])
    np.testing.assert_allclose(got, arrays[f"lpips/{kind}/u8"], rtol=1e-4)
    value, grad = distances_and_gradient(params, x, y)
    np.testing.assert_allclose(value, expected.sum(), rtol=1e-4)
    scale = np.abs(arrays[f"lpips/{kind}/grad"]).max()
    np.testing.assert_allclose(
        np.asarray(grad) / scale, arrays[f"lpips/{kind}/grad"] / scale, atol=1e-4
    )
    gray = distance_fn(*((inputs[k] + 1) * 127.5 for k in ("gray_x", "gray_y")))
    np.testing.assert_allclose(gray, arrays[f"lpips/{kind}/gray"], rtol=1e-4)
    # Equal images: distance 0, and where features are all zero a finite gradient.
    black = np.full_like(x, -1.0)
    value, grad = distances_and_gradient(params, black, black)
    assert float(value) == 0.0 and np.isfinite(np.asarray(grad)).all()


def test_files_that_do_not_fit_are_named(reference):
    out, _ = reference

    def fails(heads, backbone, match):
        with pytest.raises(DataError, match=match):
            lpips.load_lpips(str(out / heads), str(out / backbone))

    fails("alex.pth", "vgg16.pth", r"vgg16.pth: unexpected key 'features.2.weight' for alexnet")
    fails("vgg.pth", "alexnet.pth", r"alexnet.pth: no 4-d|alexnet.pth: .*vgg16")
    fails("vgg19.pth", "alexnet.pth", r"vgg19.pth: LPIPS head 'lin0.model.1.weight' is missing")
    with pytest.raises(ConfigError, match="--lpips_backbone"):
        lpips.make_consumer(str(out / "alex.pth"), None)
    assert lpips.make_consumer(None, None) is None


def train_lines(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if "split" not in r]


def train(config, workdir, *steps):
    """Run `config` in `workdir` to each number of `steps` in turn; the final state."""
    for config.num_train_steps in steps:
        final = trainer.train_and_evaluate(config, workdir)
    return final


def test_training_with_both_perceptual_terms_resumes_exactly_and_evaluates(
    reference, data_dir, tmp_path
):
    """VGG19 and LPIPS-AlexNet in G's loss: 2 steps, against 1 step resumed to 2; then the
    evaluate command's LPIPS (VGG16) on the run. One test: the runs are built once per session
    (xdist may spread a module's tests over workers)."""
    from conftest import make_tiny_config

    out, _ = reference
    config = make_tiny_config(data_dir)
    config.loss.update(
        lambda_vgg=10.0, vgg_weights=str(out / "vgg19.pth"), lambda_lpips=1.0,
        lpips_weights=str(out / "alex.pth"), lpips_backbone=str(out / "alexnet.pth"),
    )  # fmt: skip
    config.log_every_steps = config.checkpoint_every_steps = 1
    workdir, resumed_workdir = str(tmp_path / "full"), str(tmp_path / "resumed")
    full, resumed = train(config, workdir, 2), train(config, resumed_workdir, 1, 2)

    lines = train_lines(workdir)
    assert int(full.step) == 2 and [r["step"] for r in lines] == [1, 2]
    for r in lines:  # each term is on, and G's loss is their weighted sum
        assert r["g_vgg"] > 0 and r["g_lpips"] > 0, r
        expected = r["g_gan"] + 100 * r["g_l1"] + 10 * r["g_vgg"] + r["g_lpips"]
        assert r["g_loss"] == pytest.approx(expected, rel=1e-5)

    assert int(resumed.step) == 2 and [r["step"] for r in train_lines(resumed_workdir)] == [1, 2]
    for a, b in zip(jax.tree.leaves(full), jax.tree.leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)

    heads, backbone = str(out / "vgg.pth"), str(out / "vgg16.pth")
    record, folder = evaluate.evaluate(
        workdir, "val", output=str(tmp_path / "eval"), progress=False,
        lpips_weights=heads, lpips_backbone=backbone,
    )  # fmt: skip
    assert record["num_images"] == 8 and record["lpips"] > 0
    outputs, targets = (
        np.stack([
            np.asarray(Image.open(os.path.join(folder, "images", f"{i:05d}_{kind}.png")))
            for i in range(8)
        ])
        for kind in ("output", "target")
    )  # fmt: skip
    expected = lpips.make_distance_fn(lpips.load_lpips(heads, backbone))(outputs, targets)
    assert record["lpips"] == pytest.approx(float(np.mean(expected)), rel=1e-5)
