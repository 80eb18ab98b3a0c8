"""Reading .pth files safely, and the reference generators converted to ours."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch_worker

from pix2pix_jax import assembly, checkpointing, convert_weights, models, steps, torch_weights
from pix2pix_jax.configs import default

# The PyTorch side (saving .pth files, the reference generators' outputs) runs in a child
# process: see torch_worker. This process never imports torch.
torch_worker.requires_torch()
torch_worker.want("convert_weights")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The child's output directory, its arrays and its info (run once per session)."""
    torch_before = torch_worker.torch_loaded()
    out = torch_worker.results("convert_weights", tmp_path_factory)
    yield out, torch_worker.load_arrays(out), torch_worker.load_info(out)
    torch_worker.assert_torch_not_loaded_since(torch_before)


# --- torch_weights: the restricted reader ------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reads_both_torch_save_formats(reference, legacy):
    out, arrays, info = reference
    got = torch_weights.load_state_dict(str(out / ("legacy.pth" if legacy else "zip.pth")))
    assert list(got) == info["tensors"]
    for name in info["tensors"]:
        reference_value = arrays[f"tensors/{name}"]  # bfloat16 ones as float32
        value = got[name].astype(np.float32) if name in info["bf16"] else got[name]
        assert value.dtype == reference_value.dtype, name
        np.testing.assert_array_equal(value, reference_value, err_msg=name)


def test_a_module_state_dict_keeps_its_names(reference):
    out, arrays, info = reference
    got = torch_weights.load_state_dict(str(out / "module.pth"))
    assert set(got) == set(info["module_keys"])
    np.testing.assert_array_equal(got["0.weight"], arrays["module/0.weight"])


def test_refuses_anything_but_tensors_and_executes_nothing(reference):
    out, _, info = reference
    target = info["payload_target"]
    with pytest.raises(ValueError, match=r"payload.pth: refusing to load the global posix.mkdir"):
        torch_weights.load_state_dict(str(out / "payload.pth"))
    assert not os.path.exists(target)
    with pytest.raises(ValueError, match="torch.nn.modules.linear.Linear"):
        torch_weights.load_state_dict(str(out / "linear_module.pth"))  # a module, not a state_dict


def test_unreadable_files_give_one_clear_error(reference, tmp_path):
    out, _, _ = reference
    with pytest.raises(FileNotFoundError, match="nothing.pth does not exist"):
        torch_weights.load_state_dict(str(tmp_path / "nothing.pth"))
    junk = tmp_path / "image.pth"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="image.pth is not a PyTorch weights file"):
        torch_weights.load_state_dict(str(junk))
    full = out / "legacy.pth"  # the tensors, saved in the legacy format
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[:-9])
    with pytest.raises(ValueError, match=r"cut.pth: storage .* \(truncated file\?\)"):
        torch_weights.load_state_dict(str(cut))
    with pytest.raises(ValueError, match="entry 'step' is a int, not a tensor"):
        torch_weights.load_state_dict(str(out / "step.pth"))


# --- the converter --------------------------------------------------------------------------


def config_for(generator, norm, image_size, ngf=torch_worker.NGF):
    config = default.get_config()
    config.model.generator = generator
    config.model.norm = norm
    config.model.ngf = config.model.ndf = ngf
    config.image_size = image_size
    return config


images = torch_worker.images


@pytest.mark.parametrize(
    "generator, norm, size, use_dropout, legacy",
    torch_worker.GENERATOR_CASES,
)
def test_reference_generators_agree_in_deterministic_mode(
    reference, generator, norm, size, use_dropout, legacy
):
    # The child built the reference generator (random weights, batch norms calibrated on
    # images(4, size, 1)), saved its state_dict (legacy: with DataParallel's "module." prefix,
    # in the old format; instance norm: with unused running stats) and ran it on images(2, size).
    out, arrays, info = reference
    key = torch_worker.case_id((generator, norm, size, use_dropout, legacy))
    path = str(out / key / "latest_net_G.pth")
    x = images(2, size)

    config = config_for(generator, norm, size)
    params, batch_stats = convert_weights.convert_generator(
        torch_weights.load_state_dict(path), config, path
    )
    g = models.create_generator(config.model, size, 3)
    assert models.count_params(params) == info["params"][key]
    apply = jax.jit(lambda v, x: g.apply(v, x, train=False))
    got = np.asarray(apply({"params": params, "batch_stats": batch_stats}, x))
    np.testing.assert_allclose(got, arrays[f"{key}/output"], atol=1e-4)


def test_mismatches_name_the_key(reference):
    _, arrays, info = reference
    # The state_dict of the reference unet_128 (batch norm, ngf 8) as numpy arrays.
    state_dict = {k: arrays[f"mismatch/{k}"] for k in info["mismatch_keys"]}
    with pytest.raises(
        ValueError, match=r"'model.model.0.weight' has shape \(8, 3, 4, 4\).*\(16, 3"
    ):
        convert_weights.convert_generator(state_dict, config_for("unet_128", "batch", 128, 16), "f")
    with pytest.raises(ValueError, match=r"f: missing key 'model.model.1(.model.3)+.weight'"):
        convert_weights.convert_generator(state_dict, config_for("unet", "batch", 64), "f")
    with pytest.raises(ValueError, match=r"f: unexpected key 'extra.weight'"):
        extra = {**state_dict, "extra.weight": np.zeros(3, np.float32)}
        convert_weights.convert_generator(extra, config_for("unet_128", "batch", 128), "f")
    with pytest.raises(ValueError, match=r"f: missing key 'model.model.0.bias'"):
        convert_weights.convert_generator(state_dict, config_for("unet_128", "instance", 128), "f")
    with pytest.raises(ValueError, match="model.generator='encoder_decoder' has no reference"):
        convert_weights.convert_generator(
            state_dict, config_for("encoder_decoder", "batch", 128), "f"
        )


def test_converted_workdir_restores_and_generates(reference, tmp_path, data_dir):
    # The tiny config's generator (a depth-5 U-Net) is the reference's UnetGenerator(num_downs=5),
    # which the child randomised (seed 1), calibrated on images(4, 32, 1) and ran on images(2, 32).
    out, arrays, _ = reference
    pth = str(out / "workdir" / "latest_net_G.pth")
    from conftest import make_tiny_config

    config = make_tiny_config(data_dir)
    workdir = tmp_path / "converted"
    state = convert_weights.convert(pth, config, str(workdir))

    with open(workdir / "config.json") as f:  # the config, with the reference's dropout blocks
        assert json.load(f) == json.loads(convert_weights.reference_config(config).to_json())
    assert json.loads(config.to_json())["model"]["dropout_layout"] == "paper"  # not changed
    checkpointer = checkpointing.Checkpointer(str(workdir / "checkpoints"), 2)
    try:
        assert checkpointer.latest_step() == 0
        restored, data_state = checkpointer.restore(0, state)
    finally:
        checkpointer.close()
    assert data_state == {}
    setup = assembly.make_setup(config, num_train_examples=1)
    x = images(2, 32)
    got = np.asarray(steps.generate(restored, x, setup, "deterministic", jax.random.key(0)))
    np.testing.assert_allclose(got, arrays["workdir/output"], atol=1e-4)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        convert_weights.convert(pth, config, str(workdir))


def run_cli(*args):
    command = [sys.executable, "-m", "pix2pix_jax.convert_weights", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_command_line(reference, tmp_path):
    out, _, _ = reference
    pth = str(out / "cli" / "latest_net_G.pth")  # a randomised UnetGenerator(num_downs=5), ngf 8
    tiny = ["--config.image_size=32", "--config.model.ngf=8", "--config.model.ndf=8"]
    result = run_cli(f"--pth={pth}", f"--workdir={tmp_path / 'run'}", *tiny)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"params": ' in result.stdout and (tmp_path / "run" / "checkpoints" / "0").is_dir()

    wrong = run_cli(f"--pth={pth}", f"--workdir={tmp_path / 'wrong'}", *tiny[:1])
    assert wrong.returncode != 0
    assert "pix2pix_jax.convert_weights: error:" in wrong.stderr
    assert "'model.model.0.weight' has shape (8, 3, 4, 4)" in wrong.stderr
    missing = run_cli(f"--pth={tmp_path / 'no.pth'}", f"--workdir={tmp_path / 'w'}", *tiny)
    assert missing.returncode != 0 and "no.pth does not exist" in missing.stderr
    assert not (tmp_path / "wrong").exists() and not (tmp_path / "w").exists()


def test_a_tensor_that_would_read_outside_its_storage_is_refused(reference, tmp_path):
    import zipfile

    path = str(reference[0] / "ok.pth")  # {"w": torch.zeros(3)}
    for stride, name in ((b"J\xff\xff\xff\xff\x85", "negative"), (b"K\x05\x85", "too_far")):
        bad = str(tmp_path / f"{name}.pth")
        with zipfile.ZipFile(path) as src, zipfile.ZipFile(bad, "w") as dst:
            for item in src.infolist():
                data = src.read(item)
                if item.filename.endswith("data.pkl"):
                    size_then_stride = b"K\x03\x85q\x08K\x01\x85"  # (3,), memo, (1,)
                    assert data.count(size_then_stride) == 1
                    data = data.replace(size_then_stride, b"K\x03\x85q\x08" + stride)
                dst.writestr(item, data)
        with pytest.raises(ValueError, match=rf"{name}.pth: tensor 'w' "):
            torch_weights.load_state_dict(bad)
