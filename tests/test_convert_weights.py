"""Reading .pth files safely, and the reference generators converted to ours."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from pix2pix_jax import checkpointing, convert_weights, models, steps, torch_weights, train
from pix2pix_jax.configs import default

torch = pytest.importorskip("torch")
torch_reference = pytest.importorskip("torch_reference")


# --- torch_weights: the restricted reader ------------------------------------------------------


def tensors():
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(20, generator=gen)
    return {
        "conv.weight": torch.randn(4, 3, 2, 2, generator=gen),
        "transposed": torch.randn(5, 6, generator=gen).t(),  # non-contiguous strides
        "slice": torch.randn(10, generator=gen)[2:7],  # a storage offset
        "head": shared[:5],  # two tensors of one storage
        "tail": shared[5:],
        "count": torch.tensor(7, dtype=torch.int64),
        "half": torch.randn(4, generator=gen).half(),
        "bf16": torch.randn(2, 3, generator=gen).to(torch.bfloat16),
        "mask": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
    }


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_reads_both_torch_save_formats(tmp_path, legacy):
    expected = tensors()
    path = str(tmp_path / "w.pth")
    torch.save(expected, path, _use_new_zipfile_serialization=not legacy)
    got = torch_weights.load_state_dict(path)
    assert list(got) == list(expected)
    for name, tensor in expected.items():
        reference = tensor.float().numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
        value = got[name].astype(np.float32) if tensor.dtype == torch.bfloat16 else got[name]
        assert value.dtype == reference.dtype, name
        np.testing.assert_array_equal(value, reference, err_msg=name)


def test_a_module_state_dict_keeps_its_names(tmp_path):
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = str(tmp_path / "m.pth")
    torch.save(module.state_dict(), path)
    got = torch_weights.load_state_dict(path)
    assert set(got) == set(module.state_dict())
    np.testing.assert_array_equal(got["0.weight"], module[0].weight.detach().numpy())


class Payload:
    """An object whose unpickling would create a directory."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_refuses_anything_but_tensors_and_executes_nothing(tmp_path):
    target = str(tmp_path / "created_by_unpickling")
    path = str(tmp_path / "payload.pth")
    torch.save({"weight": torch.zeros(2), "x": Payload(target)}, path)
    with pytest.raises(ValueError, match=r"payload.pth: refusing to load the global posix.mkdir"):
        torch_weights.load_state_dict(path)
    assert not os.path.exists(target)
    torch.save(torch.nn.Linear(2, 2), path)  # a whole module, not a state_dict
    with pytest.raises(ValueError, match="torch.nn.modules.linear.Linear"):
        torch_weights.load_state_dict(path)


def test_unreadable_files_give_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.pth does not exist"):
        torch_weights.load_state_dict(str(tmp_path / "nothing.pth"))
    junk = tmp_path / "image.pth"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="image.pth is not a PyTorch weights file"):
        torch_weights.load_state_dict(str(junk))
    full = tmp_path / "full.pth"
    torch.save(tensors(), str(full), _use_new_zipfile_serialization=False)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[:-9])
    with pytest.raises(ValueError, match=r"cut.pth: storage .* \(truncated file\?\)"):
        torch_weights.load_state_dict(str(cut))
    torch.save({"step": 3}, str(full))
    with pytest.raises(ValueError, match="entry 'step' is a int, not a tensor"):
        torch_weights.load_state_dict(str(full))


# --- the converter --------------------------------------------------------------------------


def config_for(generator, norm, image_size, ngf=8):
    config = default.get_config()
    config.model.generator = generator
    config.model.norm = norm
    config.model.ngf = config.model.ndf = ngf
    config.image_size = image_size
    return config


def reference_generator(generator, norm, use_dropout, ngf=8):
    if generator.startswith("resnet"):
        n_blocks = int(generator.split("_")[1][0])
        net = torch_reference.ResnetGenerator(3, 3, ngf, norm, use_dropout, n_blocks)
    else:
        num_downs = {"unet_256": 8, "unet_128": 7}[generator]
        net = torch_reference.UnetGenerator(3, 3, num_downs, ngf, norm, use_dropout)
    return torch_reference.randomize(net, seed=0)


def images(n, size, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


def torch_output(net, x):
    with torch.no_grad():
        return net(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize(
    "generator, norm, size, use_dropout, legacy",
    [
        ("unet_256", "batch", 256, True, True),
        ("unet_128", "instance", 128, True, False),
        ("resnet_6blocks", "instance", 32, True, False),
        ("resnet_9blocks", "batch", 16, False, True),
    ],
)
def test_reference_generators_agree_in_deterministic_mode(
    tmp_path, generator, norm, size, use_dropout, legacy
):
    net = reference_generator(generator, norm, use_dropout)
    x = images(2, size)
    if norm == "batch":  # running statistics of a real batch keep the deep ResNet unsaturated
        torch_reference.calibrate_batch_norm(
            net, torch.from_numpy(images(4, size, 1)).permute(0, 3, 1, 2)
        )
    state_dict = net.state_dict()
    if norm == "instance":  # old reference versions kept (unused) instance-norm running stats
        first_norm, channels = (
            ("model.2", 8) if generator.startswith("resnet") else ("model.model.1.model.2", 16)
        )
        state_dict[f"{first_norm}.running_mean"] = torch.zeros(channels)
        state_dict[f"{first_norm}.running_var"] = torch.ones(channels)
    if legacy:  # as saved from nn.DataParallel by old PyTorch versions
        state_dict = {f"module.{k}": v for k, v in state_dict.items()}
    path = str(tmp_path / "latest_net_G.pth")
    torch.save(state_dict, path, _use_new_zipfile_serialization=not legacy)

    config = config_for(generator, norm, size)
    params, batch_stats = convert_weights.convert_generator(
        torch_weights.load_state_dict(path), config, path
    )
    g = models.create_generator(config.model, size, 3)
    assert models.count_params(params) == sum(p.numel() for p in net.parameters())
    apply = jax.jit(lambda v, x: g.apply(v, x, train=False))
    got = np.asarray(apply({"params": params, "batch_stats": batch_stats}, x))
    np.testing.assert_allclose(got, torch_output(net, x), atol=1e-4)


def test_mismatches_name_the_key(tmp_path):
    state_dict = {
        k: v.numpy() for k, v in reference_generator("unet_128", "batch", True).state_dict().items()
    }
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


def test_converted_workdir_restores_and_generates(tmp_path, data_dir):
    # The tiny config's generator (a depth-5 U-Net) is the reference's UnetGenerator(num_downs=5).
    net = torch_reference.UnetGenerator(3, 3, 5, 8, "batch", True)
    net = torch_reference.calibrate_batch_norm(
        torch_reference.randomize(net, 1), torch.from_numpy(images(4, 32, 1)).permute(0, 3, 1, 2)
    )
    pth = str(tmp_path / "latest_net_G.pth")
    torch.save(net.state_dict(), pth)
    from conftest import make_tiny_config

    config = make_tiny_config(data_dir)
    workdir = tmp_path / "converted"
    state = convert_weights.convert(pth, config, str(workdir))

    with open(workdir / "config.json") as f:
        assert json.load(f) == json.loads(config.to_json())
    checkpointer = checkpointing.Checkpointer(str(workdir / "checkpoints"), 2)
    try:
        assert checkpointer.latest_step() == 0
        restored, data_state = checkpointer.restore(0, state)
    finally:
        checkpointer.close()
    assert data_state == {}
    setup = train.make_setup(config, num_train_examples=1)
    x = images(2, 32)
    got = np.asarray(steps.generate(restored, x, setup, "deterministic", jax.random.key(0)))
    np.testing.assert_allclose(got, torch_output(net, x), atol=1e-4)
    with pytest.raises(ValueError, match="already holds checkpoints"):
        convert_weights.convert(pth, config, str(workdir))


def run_cli(*args):
    command = [sys.executable, "-m", "pix2pix_jax.convert_weights", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600)


def test_command_line(tmp_path):
    net = torch_reference.randomize(torch_reference.UnetGenerator(3, 3, 5, 8, "batch", True), 2)
    pth = str(tmp_path / "latest_net_G.pth")
    torch.save(net.state_dict(), pth)
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


def test_a_tensor_that_would_read_outside_its_storage_is_refused(tmp_path):
    import zipfile

    path = str(tmp_path / "ok.pth")
    torch.save({"w": torch.zeros(3)}, path)
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
