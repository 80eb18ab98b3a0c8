"""The Flax FCN-8s, fed from .caffemodel files, against a PyTorch re-expression of Caffe's net.

The PyTorch side (tests/torch_reference.py `CaffeFCN8s`: ceil-mode pools,
ConvTranspose2d, explicit crops) runs in a child process; its random weights
come back as arrays and are written here as .caffemodel files in both layer
fields.
"""

import numpy as np
import pytest
import torch_worker
from test_caffemodel import caffemodel_bytes, write

from pix2pix_jax import fcn8s
from pix2pix_jax.errors import DataError

torch_worker.requires_torch()
torch_worker.want("fcn8s")
WIDTH = torch_worker.FCN8S_WIDTH


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The child's arrays (weights as Caffe blobs, scores) and its layer order."""
    torch_before = torch_worker.torch_loaded()
    out = torch_worker.results("fcn8s", tmp_path_factory)
    yield torch_worker.load_arrays(out), torch_worker.load_info(out)["layers"]
    torch_worker.assert_torch_not_loaded_since(torch_before)


def net_layers(arrays, order, scales=None):
    """(name, type, blobs) of the reference's weights, as a .caffemodel lists them."""
    layers = [("data", "Input", [])]
    for name in order:
        blobs = [arrays[f"params/{name}/{i}"] for i in (0, 1) if f"params/{name}/{i}" in arrays]
        kind = "Deconvolution" if name.startswith("upscore") else "Convolution"
        layers.append((name, kind, blobs))
        layers.append((f"relu_{name}", "ReLU", []))
    if scales:  # Caffe's Scale layers of the "at once" variant: one factor each
        layers += [(n, "Scale", [np.array([s], np.float32)]) for n, s in scales.items()]
    return layers


def inputs():
    return torch_worker.INPUTS["fcn8s"]()["x"]


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "legacy-layers"])
def test_scores_match_caffe_geometry_in_pytorch(reference, tmp_path, legacy):
    arrays, order = reference
    if legacy:  # the V1 field has no Scale type: the plain network only
        data = caffemodel_bytes(net_layers(arrays, order)[1::2], legacy=True)
    else:
        data = caffemodel_bytes(net_layers(arrays, order))
    variables = fcn8s.load_fcn8s(write(tmp_path / "fcn.caffemodel", data), width=WIDTH)
    x = inputs()
    got = np.asarray(fcn8s.FCN8s(WIDTH).apply(variables, x))
    expected = arrays["scores"]
    assert got.shape == x.shape[:3] + (fcn8s.NUM_CLASSES,) == expected.shape
    assert np.abs(expected).max() > 1.0  # random weights still give non-trivial scores
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    labels = np.asarray(fcn8s.segment(variables, x, WIDTH))
    np.testing.assert_array_equal(labels, expected.argmax(-1))


def test_scale_layers_are_folded_into_the_skip_scores(reference, tmp_path):
    arrays, order = reference
    pool4, pool3 = torch_worker.FCN8S_SCALES
    scales = {"scale_pool4": pool4, "scale_pool3": pool3}
    data = caffemodel_bytes(net_layers(arrays, order, scales))
    variables = fcn8s.load_fcn8s(write(tmp_path / "atonce.caffemodel", data), width=WIDTH)
    got = np.asarray(fcn8s.FCN8s(WIDTH).apply(variables, inputs()))
    expected = arrays["scores_scaled"]
    assert np.abs(expected - arrays["scores"]).max() > 0.1  # the scales matter
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_files_that_are_not_this_fcn8s_are_named(reference, tmp_path):
    arrays, order = reference
    layers = net_layers(arrays, order)

    def fails(name, changed, match, width=WIDTH):
        path = write(tmp_path / f"{name}.caffemodel", caffemodel_bytes(changed))
        with pytest.raises(DataError, match=match) as info:
            fcn8s.load_fcn8s(path, width=width)
        assert f"{name}.caffemodel" in str(info.value)

    # The real network's widths by default: a narrow file is refused at its first layer.
    fails("narrow", layers, r"'conv1_1' kernel has shape \(2, 3, 3, 3\).*\(64, 3, 3, 3\)", 64)
    fails("no_fc7", [entry for entry in layers if entry[0] != "fc7"], "layer 'fc7' is missing")
    fails("extra", layers + [("fc8", "InnerProduct", [np.zeros(3)])], "'fc8' is not part")
    no_bias = [(n, k, b[:1]) if n == "fc6" else (n, k, b) for n, k, b in layers]
    fails("no_bias", no_bias, "'fc6' has 1 blobs, FCN-8s 2")
