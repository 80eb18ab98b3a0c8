"""The Flax FID Inception against an independent PyTorch re-expression with the same weights."""

import numpy as np
import pytest

from pix2pix_jax import inception

torch = pytest.importorskip("torch")
torch_reference = pytest.importorskip("torch_reference")
F = torch.nn.functional


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The PyTorch network with random weights, and those weights saved as a .pth file."""
    state_dict = torch_reference.fid_inception_state_dict(seed=0)
    path = str(tmp_path_factory.mktemp("inception") / inception.WEIGHTS_FILE)
    torch.save(state_dict, path)
    net = torch_reference.FIDInceptionV3().eval()
    net.load_state_dict(state_dict)
    return net, path


def test_features_match_pytorch(reference):
    net, path = reference
    variables = inception.load_fid_inception(path)
    images = np.random.default_rng(0).uniform(-1, 1, (3, 75, 75, 3)).astype(np.float32)
    with torch.no_grad():
        expected = net(torch.from_numpy(images.transpose(0, 3, 1, 2)), resize=False).numpy()
    # Three images in batches of two: one compiled shape, the last batch padded.
    got = inception.make_feature_fn(variables, batch_size=2, resize=False)(images)
    assert got.shape == (3, inception.FEATURES)
    assert np.abs(expected).max() > 1.0  # random weights still give non-trivial features
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(2, 40, 57, 3), (1, 320, 410, 3), (2, 31, 31, 1)])
def test_preprocess_resizes_as_pytorch_fid(shape):
    images = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2))
    if shape[-1] == 1:  # grayscale: the same image in R, G and B
        x = x.repeat(1, 3, 1, 1)
    expected = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    got = np.asarray(inception.preprocess(images))
    np.testing.assert_allclose(got, expected.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_preprocess_rejects_what_the_network_cannot_take():
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        inception.preprocess(np.zeros((1, 80, 80, 2)))
    with pytest.raises(ValueError, match="at least 75x75"):
        inception.preprocess(np.zeros((1, 64, 64, 3)), resize=False)


def test_wrong_weights_are_named(tmp_path):
    state_dict = dict(torch_reference.fid_inception_state_dict(seed=1))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        inception.load_fid_inception(str(tmp_path / "missing.pth"))

    def fails(sd, match):
        path = str(tmp_path / "bad.pth")
        torch.save(sd, path)
        with pytest.raises(ValueError, match=match):
            inception.load_fid_inception(path)

    fails({k: v for k, v in state_dict.items() if "Mixed_7c" not in k}, "missing.*Mixed_7c")
    fails({**state_dict, "Mixed_6b.branch1x1.conv.weight": torch.zeros(3, 3)}, "Mixed_6b.branch1x1")
    fails({**state_dict, "model.model.0.weight": torch.zeros(3)}, "unexpected key 'model.model")
