"""Runs the PyTorch side of the tests in a child process, so that pytest never imports torch.

Tests compare pix2pix_jax with PyTorch re-expressions (`torch_reference`). The
test process runs JAX as users do, without torch loaded (earlier sessions that
mixed the two crashed inside XLA:CPU; no interaction was found, see the
README's test section, but the process stays clean), so the PyTorch side runs
here, in `python tests/torch_worker.py OUT JOB...`, and the tests (JAX side)
read what it leaves in OUT/JOB/: .pth weights files, `arrays.npz` (outputs) and
`info.json` (counts, key orders). It reads its inputs from OUT/JOB/inputs.npz.
(Most inputs are seeded numpy arrays that the tests recompute to feed the JAX side.)

Parent side (no torch import, ever):

* `requires_torch()`: skip the calling test module when torch is not installed.
* `want(job)`: at import of a test module, register the job it needs.
* `results(job, tmp_path_factory)`: the job's output directory. The first call
  of a session runs every registered job not yet run in ONE child process, so
  a session that collects all the torch-comparing modules pays for one torch
  import (test collection imports every module before any test runs).

Child side (`main`): one function per job, in `JOBS`.
"""

import functools
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent

# ---------------------------------------------------------------------------
# Shared by both sides: the inputs and the parameters of the jobs.
# ---------------------------------------------------------------------------


def images(n, size, seed=0):
    """Uniform [-1, 1] NHWC float32 images."""
    return np.random.default_rng(seed).uniform(-1, 1, (n, size, size, 3)).astype(np.float32)


# (generator, norm, image size, use_dropout, legacy .pth format): the converter's cases.
GENERATOR_CASES = [
    ("unet_256", "batch", 256, True, True),
    ("unet_128", "instance", 128, True, False),
    ("resnet_6blocks", "instance", 32, True, False),
    ("resnet_9blocks", "batch", 16, False, True),
]
NGF = 8
INCEPTION_WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"  # = inception.WEIGHTS_FILE
RESIZE_SHAPES = [(2, 40, 57, 3), (1, 320, 410, 3), (2, 31, 31, 1)]
BAD_INCEPTION_FILES = ("missing_mixed_7c", "wrong_shape", "unexpected_key")


def case_id(case):
    return "-".join(str(v) for v in case)


def _convert_weights_inputs():
    arrays = {}
    for case in GENERATOR_CASES:
        _, norm, size, _, _ = case
        arrays[f"{case_id(case)}/x"] = images(2, size)
        if norm == "batch":
            arrays[f"{case_id(case)}/calibration"] = images(4, size, 1)
    arrays["workdir/x"] = images(2, 32)
    arrays["workdir/calibration"] = images(4, 32, 1)
    return arrays


def _inception_inputs():
    arrays = {"features/x": np.random.default_rng(0).uniform(-1, 1, (3, 75, 75, 3))}
    for i, shape in enumerate(RESIZE_SHAPES):
        arrays[f"resize/{i}"] = np.random.default_rng(1).uniform(-1, 1, shape)
    return {k: v.astype(np.float32) for k, v in arrays.items()}


FCN8S_WIDTH = 2  # a narrow FCN-8s: 2, 4, 8, 16, 16 channels, fc6/fc7 128
FCN8S_SCALES = (0.5, 2.0)  # pool4 / pool3 factors of the "at once" variant's Scale layers


def _fcn8s_inputs():
    # Preprocessed (BGR, mean-subtracted) images of odd sides: Caffe's ceil-mode pools.
    return {"x": np.random.default_rng(3).normal(0, 40, (2, 21, 30, 3)).astype(np.float32)}


# Batch-norm running statistics: input shapes (NHWC), three train-mode calls each.
BN_SHAPES = [(1, 2, 2, 3), (1, 4, 4, 3), (3, 4, 4, 3), (2, 2, 2, 3)]
# The reference's unet_128 with its dropout masks (keep = 1) at the outputs of its two
# dropout blocks, 4x4 and 8x8 (NHWC, ngf * 8 channels); one image (paper test mode).
DROPOUT_NGF, DROPOUT_SIZES = 2, (4, 8)


def dropout_masks():
    rng = np.random.default_rng(5)
    return {s: rng.random((1, s, s, 8 * DROPOUT_NGF)) < 0.5 for s in DROPOUT_SIZES}


def _fidelity_inputs():
    rng = np.random.default_rng(4)
    arrays = {
        f"bn/{i}/{t}": rng.normal(1, 2, shape).astype(np.float32)
        for i, shape in enumerate(BN_SHAPES)
        for t in range(3)
    }
    arrays["unet/x"] = images(1, 128, seed=6)
    arrays.update({f"unet/mask/{s}": m for s, m in dropout_masks().items()})
    return arrays


PERCEPTUAL_WIDTH = 8  # narrow torchvision networks: VGG 8 .. 64 channels, AlexNet 8 .. 48
PERCEPTUAL_SIZE = (36, 40)  # non-square, not a multiple of 32: floor-mode pools on both axes


def _perceptual_inputs():
    rng = np.random.default_rng(7)
    h, w = PERCEPTUAL_SIZE
    arrays = {
        "x": rng.uniform(-1, 1, (2, h, w, 3)),
        "y": rng.uniform(-1, 1, (2, h, w, 3)),
        "gray_x": rng.uniform(-1, 1, (2, 32, 32, 1)),
        "gray_y": rng.uniform(-1, 1, (2, 32, 32, 1)),
    }
    arrays = {k: v.astype(np.float32) for k, v in arrays.items()}
    arrays["u8_a"] = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    arrays["u8_b"] = rng.integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    return arrays


# pix2pixHD's multi-scale D and feature matching: (num_D, n_layers_D, ndf, image side).
HD_NUM_D, HD_N_LAYERS, HD_NDF, HD_SIZE = 3, 2, 8, 48
HD_LAMBDA_FEAT = 10.0


def _hd_inputs():
    rng = np.random.default_rng(7)
    pair = lambda: rng.uniform(-1, 1, (2, HD_SIZE, HD_SIZE, 6)).astype(np.float32)  # noqa: E731
    return {"real": pair(), "fake": pair()}


INPUTS = {
    "fidelity": _fidelity_inputs,
    "convert_weights": _convert_weights_inputs,
    "inception": _inception_inputs,
    "fcn8s": _fcn8s_inputs,
    "perceptual": _perceptual_inputs,
    "hd": _hd_inputs,
}

# ---------------------------------------------------------------------------
# Parent side.
# ---------------------------------------------------------------------------

_wanted: list[str] = []
_done: dict[str, pathlib.Path] = {}
_failed: dict[str, Exception] = {}


def requires_torch():
    """Skip the calling module (at import) or test when torch is not installed, not importing it."""
    import pytest

    if importlib.util.find_spec("torch") is None:
        pytest.skip(
            "torch is not installed (the PyTorch references need it)", allow_module_level=True
        )


def want(job: str) -> None:
    """Register `job` for the session's child process (call at a test module's import)."""
    if job not in INPUTS:
        raise ValueError(f"unknown job {job!r}")
    if job not in _wanted:
        _wanted.append(job)


def results(job: str, tmp_path_factory) -> pathlib.Path:
    """OUT/job after the child has run it (together with every other registered job)."""
    want(job)
    if job in _failed:  # one failing child per session, not one per test
        raise _failed[job]
    if job not in _done:
        pending = [j for j in _wanted if j not in _done]
        out = tmp_path_factory.mktemp("torch_reference")
        try:
            run_child(out, pending)
        except Exception as e:
            _failed.update(dict.fromkeys(pending, e))
            raise
        _done.update({j: out / j for j in pending})
    return _done[job]


def run_child(out: pathlib.Path, jobs: list[str]) -> None:
    for job in jobs:
        (out / job).mkdir()
        np.savez(out / job / "inputs.npz", **INPUTS[job]())
    command = [sys.executable, str(HERE / "torch_worker.py"), str(out), *jobs]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(
            f"the PyTorch worker failed ({' '.join(command)}):\n{done.stderr[-4000:]}"
        )


def torch_loaded() -> bool:
    return "torch" in sys.modules


def assert_torch_not_loaded_since(before: bool) -> None:
    """For fixtures' teardown: the module's tests did not load torch into this process.

    `before`: `torch_loaded()` at the fixture's setup. (Code outside these tests
    can load it: pix2pix_jax's MetricWriter imports tensorboardX, which imports
    torch when installed; see test_torch_isolation.)
    """
    assert before or not torch_loaded(), "a test loaded torch into the pytest process"


def load_arrays(directory: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(directory / "arrays.npz") as f:
        return {k: f[k] for k in f.files}


def load_info(directory: pathlib.Path) -> dict:
    with open(directory / "info.json") as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# Child side: torch is imported only below, when this file runs as a script.
# ---------------------------------------------------------------------------


class Payload:
    """An object whose unpickling would create a directory."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def _nchw(torch, x):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def _nhwc(t):
    return t.numpy().transpose(0, 2, 3, 1)


def _reader_files(torch, out, arrays, info):
    """The torch_weights reader's cases: both formats, a module's names, refused contents."""
    gen = torch.Generator().manual_seed(0)
    shared = torch.randn(20, generator=gen)
    tensors = {
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
    torch.save(tensors, str(out / "zip.pth"))
    torch.save(tensors, str(out / "legacy.pth"), _use_new_zipfile_serialization=False)
    info["tensors"] = list(tensors)
    info["bf16"] = [k for k, t in tensors.items() if t.dtype == torch.bfloat16]
    for name, t in tensors.items():  # numpy has no bfloat16: those as float32
        arrays[f"tensors/{name}"] = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()

    module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    torch.save(module.state_dict(), str(out / "module.pth"))
    info["module_keys"] = list(module.state_dict())
    arrays["module/0.weight"] = module[0].weight.detach().numpy()

    target = str(out / "created_by_unpickling")
    info["payload_target"] = target
    torch.save({"weight": torch.zeros(2), "x": Payload(target)}, str(out / "payload.pth"))
    torch.save(torch.nn.Linear(2, 2), str(out / "linear_module.pth"))  # a module, not a state_dict
    torch.save({"step": 3}, str(out / "step.pth"))
    torch.save({"w": torch.zeros(3)}, str(out / "ok.pth"))


def convert_weights_job(torch, tr, out, inputs):
    arrays, info = {}, {"params": {}}
    _reader_files(torch, out, arrays, info)

    def reference_generator(generator, norm, use_dropout, ngf=NGF):
        if generator.startswith("resnet"):
            n_blocks = int(generator.split("_")[1][0])
            net = tr.ResnetGenerator(3, 3, ngf, norm, use_dropout, n_blocks)
        else:
            num_downs = {"unet_256": 8, "unet_128": 7}[generator]
            net = tr.UnetGenerator(3, 3, num_downs, ngf, norm, use_dropout)
        return tr.randomize(net, seed=0)

    def output(net, x):
        with torch.no_grad():
            return _nhwc(net(_nchw(torch, x)))

    for case in GENERATOR_CASES:
        generator, norm, _, use_dropout, legacy = case
        key = case_id(case)
        net = reference_generator(generator, norm, use_dropout)
        if norm == "batch":  # running statistics of a real batch keep the deep ResNet unsaturated
            tr.calibrate_batch_norm(net, _nchw(torch, inputs[f"{key}/calibration"]))
        state_dict = net.state_dict()
        if norm == "instance":  # old reference versions kept (unused) instance-norm running stats
            first_norm, channels = (
                ("model.2", 8) if generator.startswith("resnet") else ("model.model.1.model.2", 16)
            )
            state_dict[f"{first_norm}.running_mean"] = torch.zeros(channels)
            state_dict[f"{first_norm}.running_var"] = torch.ones(channels)
        if legacy:  # as saved from nn.DataParallel by old PyTorch versions
            state_dict = {f"module.{k}": v for k, v in state_dict.items()}
        (out / key).mkdir()
        torch.save(
            state_dict,
            str(out / key / "latest_net_G.pth"),
            _use_new_zipfile_serialization=not legacy,
        )
        info["params"][key] = sum(p.numel() for p in net.parameters())
        arrays[f"{key}/output"] = output(net, inputs[f"{key}/x"])

    # A state_dict the converter must refuse for other configs (as numpy arrays, in order).
    state_dict = reference_generator("unet_128", "batch", True).state_dict()
    info["mismatch_keys"] = list(state_dict)
    arrays.update({f"mismatch/{k}": v.numpy() for k, v in state_dict.items()})

    # The tiny config's generator (a depth-5 U-Net) is the reference's UnetGenerator(num_downs=5).
    net = tr.UnetGenerator(3, 3, 5, NGF, "batch", True)
    net = tr.calibrate_batch_norm(tr.randomize(net, 1), _nchw(torch, inputs["workdir/calibration"]))
    (out / "workdir").mkdir()
    torch.save(net.state_dict(), str(out / "workdir" / "latest_net_G.pth"))
    arrays["workdir/output"] = output(net, inputs["workdir/x"])

    net = tr.randomize(tr.UnetGenerator(3, 3, 5, NGF, "batch", True), 2)
    (out / "cli").mkdir()
    torch.save(net.state_dict(), str(out / "cli" / "latest_net_G.pth"))
    return arrays, info


def inception_job(torch, tr, out, inputs):
    F = torch.nn.functional
    arrays, info = {}, {}
    state_dict = tr.fid_inception_state_dict(seed=0)
    torch.save(state_dict, str(out / INCEPTION_WEIGHTS_FILE))
    net = tr.FIDInceptionV3().eval()
    net.load_state_dict(state_dict)
    with torch.no_grad():
        arrays["features"] = net(_nchw(torch, inputs["features/x"]), resize=False).numpy()

    for i, shape in enumerate(RESIZE_SHAPES):
        x = _nchw(torch, inputs[f"resize/{i}"])
        if shape[-1] == 1:  # grayscale: the same image in R, G and B
            x = x.repeat(1, 3, 1, 1)
        resized = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        arrays[f"resize/{i}"] = _nhwc(resized)

    state_dict = dict(tr.fid_inception_state_dict(seed=1))
    bad = {
        "missing_mixed_7c": {k: v for k, v in state_dict.items() if "Mixed_7c" not in k},
        "wrong_shape": {**state_dict, "Mixed_6b.branch1x1.conv.weight": torch.zeros(3, 3)},
        "unexpected_key": {**state_dict, "model.model.0.weight": torch.zeros(3)},
    }
    assert tuple(bad) == BAD_INCEPTION_FILES
    for name, sd in bad.items():
        torch.save(sd, str(out / f"{name}.pth"))
    return arrays, info


def fcn8s_job(torch, tr, out, inputs):
    """FCN-8s of Caffe's deploy geometry: random weights (as Caffe blobs) and its scores."""
    net = tr.caffe_fcn8s(FCN8S_WIDTH, seed=0)
    arrays = {}
    for name, module in net.named_children():
        arrays[f"params/{name}/0"] = module.weight.detach().numpy()
        if module.bias is not None:
            arrays[f"params/{name}/1"] = module.bias.detach().numpy()
    with torch.no_grad():
        x = _nchw(torch, inputs["x"])
        arrays["scores"] = _nhwc(net(x))
        arrays["scores_scaled"] = _nhwc(net(x, FCN8S_SCALES))
    return arrays, {"layers": [name for name, _ in net.named_children()]}


def fidelity_job(torch, tr, out, inputs):
    arrays = {}
    for i in range(len(BN_SHAPES)):  # BatchNorm2d's running statistics after train calls
        bn = torch.nn.BatchNorm2d(3).train()
        with torch.no_grad():
            for t in range(3):
                bn(_nchw(torch, inputs[f"bn/{i}/{t}"]))
        arrays[f"bn/{i}/mean"] = bn.running_mean.numpy()
        arrays[f"bn/{i}/var"] = bn.running_var.numpy()

    class MaskedDropout(torch.nn.Module):  # nn.Dropout(0.5) with the given mask
        def forward(self, x):
            mask = _nchw(torch, inputs[f"unet/mask/{x.shape[-1]}"]).to(x.dtype)
            return x * mask / 0.5

    net = tr.randomize(tr.UnetGenerator(3, 3, 7, DROPOUT_NGF, "batch", True), seed=3)
    for block in net.modules():
        if isinstance(block, tr.UnetSkipConnectionBlock) and isinstance(
            block.model[-1], torch.nn.Dropout
        ):
            block.model[-1] = MaskedDropout()
    torch.save(net.state_dict(), str(out / "unet_128.pth"))
    with torch.no_grad():  # paper test mode: batch statistics of the image, dropout on
        arrays["unet/output"] = _nhwc(net.train()(_nchw(torch, inputs["unet/x"])))
    return arrays, {}


def _grad_nhwc(torch, loss_fn, x):
    """loss_fn(NCHW x) and its gradient, as NHWC numpy."""
    t = _nchw(torch, x).requires_grad_(True)
    loss = loss_fn(t)
    loss.backward()
    return loss.detach().numpy(), _nhwc(t.grad)


def _lpips_sum(model, y, x):
    return model(x, y).sum()


def perceptual_job(torch, tr, out, inputs):
    """pix2pixHD's VGG loss and lpips' LPIPS on random torchvision-layout weights."""
    arrays, width = {}, PERCEPTUAL_WIDTH
    vgg19 = tr.he_randomize(tr.torchvision_vgg((2, 2, 4, 4, 4), width), seed=0)
    torch.save(vgg19.state_dict(), str(out / "vgg19.pth"))
    criterion = tr.VGGLoss(vgg19.features)
    x, y = inputs["x"], inputs["y"]
    with torch.no_grad():
        for i, f in enumerate(criterion.vgg(_nchw(torch, x))):
            arrays[f"vgg/features/{i}"] = _nhwc(f)
    arrays["vgg/loss"], arrays["vgg/grad"] = _grad_nhwc(
        torch, lambda t: criterion(t, _nchw(torch, y)), x
    )
    with torch.no_grad():  # grayscale: the same image in R, G and B
        gx, gy = (_nchw(torch, inputs[k]).repeat(1, 3, 1, 1) for k in ("gray_x", "gray_y"))
        arrays["vgg/gray_loss"] = criterion(gx, gy).numpy()
    state_dict = vgg19.state_dict()
    torch.save(
        {k: v for k, v in state_dict.items() if not k.startswith("features.28.")},
        str(out / "vgg19_missing.pth"),
    )
    bn_like = dict(state_dict, **{"features.1.running_mean": torch.zeros(width)})
    torch.save(bn_like, str(out / "vgg19_bn_like.pth"))

    backbones = {
        "alex": (tr.torchvision_alexnet(width), "alexnet", (1, 3, 6, 4, 4)),
        "vgg": (tr.torchvision_vgg((2, 2, 3, 3, 3), width), "vgg16", (1, 2, 4, 8, 8)),
    }
    gen = torch.Generator().manual_seed(1)
    for seed, (kind, (net, name, multiples)) in enumerate(backbones.items(), start=2):
        net = tr.he_randomize(net, seed)
        torch.save(net.state_dict(), str(out / f"{name}.pth"))
        model = tr.LPIPS(kind, net.features, [width * m for m in multiples]).eval()
        with torch.no_grad():  # the released heads are non-negative
            for lin in model.lins:
                lin.model[1].weight.copy_(torch.rand(lin.model[1].weight.shape, generator=gen))
        # The released heads files predate PyTorch 1.6: the legacy format.
        heads = tr.lpips_heads_state_dict(model)
        torch.save(heads, str(out / f"{kind}.pth"), _use_new_zipfile_serialization=False)
        _, arrays[f"lpips/{kind}/grad"] = _grad_nhwc(
            torch, functools.partial(_lpips_sum, model, _nchw(torch, y)), x
        )
        with torch.no_grad():
            arrays[f"lpips/{kind}/distance"] = model(_nchw(torch, x), _nchw(torch, y)).numpy()
            a, b = (
                _nchw(torch, inputs[k].astype(np.float32) / 127.5 - 1) for k in ("u8_a", "u8_b")
            )
            arrays[f"lpips/{kind}/u8"] = model(a, b).numpy().reshape(-1)
            gx, gy = (_nchw(torch, inputs[k]).repeat(1, 3, 1, 1) for k in ("gray_x", "gray_y"))
            arrays[f"lpips/{kind}/gray"] = model(gx, gy).numpy().reshape(-1)
        arrays[f"lpips/{kind}/distance"] = arrays[f"lpips/{kind}/distance"].reshape(-1)
    return arrays, {"vgg19_keys": list(state_dict)}


def hd_job(torch, tr, out, inputs):
    """pix2pixHD's MultiscaleDiscriminator (random weights): features and losses."""
    net = tr.HDMultiscaleDiscriminator(6, HD_NDF, HD_N_LAYERS, "instance", HD_NUM_D, padw=1)
    net = tr.randomize(net, seed=11).train()
    arrays = {f"params/{k}": v.detach().numpy() for k, v in net.state_dict().items()}
    with torch.no_grad():
        pred_real = net(_nchw(torch, inputs["real"]))
        pred_fake = net(_nchw(torch, inputs["fake"]))
        for name, pred in (("real", pred_real), ("fake", pred_fake)):
            for i, scale in enumerate(pred):
                for j, t in enumerate(scale):
                    arrays[f"{name}/{i}/{j}"] = _nhwc(t)
        for lsgan in (True, False):
            mode = "lsgan" if lsgan else "vanilla"
            loss_d = 0.5 * (tr.hd_gan_loss(pred_fake, False, lsgan)
                            + tr.hd_gan_loss(pred_real, True, lsgan))  # fmt: skip
            arrays[f"loss/{mode}/d"] = loss_d.numpy()
            arrays[f"loss/{mode}/g_gan"] = tr.hd_gan_loss(pred_fake, True, lsgan).numpy()
        feat = tr.hd_feature_matching(pred_fake, pred_real, HD_N_LAYERS, HD_NUM_D, HD_LAMBDA_FEAT)
        arrays["loss/feat"] = feat.numpy()
    return arrays, {"keys": list(net.state_dict())}


JOBS = {
    "fidelity": fidelity_job,
    "convert_weights": convert_weights_job,
    "inception": inception_job,
    "fcn8s": fcn8s_job,
    "perceptual": perceptual_job,
    "hd": hd_job,
}


def main(argv):
    out, jobs = pathlib.Path(argv[1]), argv[2:]
    import torch
    import torch_reference

    for job in jobs:
        start = time.perf_counter()
        with np.load(out / job / "inputs.npz") as f:
            inputs = {k: f[k] for k in f.files}
        arrays, info = JOBS[job](torch, torch_reference, out / job, inputs)
        np.savez(out / job / "arrays.npz", **arrays)
        with open(out / job / "info.json", "w") as f:
            json.dump(info, f)
        print(f"{job}: {time.perf_counter() - start:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main(sys.argv)
