"""The Flax FID Inception against an independent PyTorch re-expression with the same weights."""

import numpy as np
import pytest
import torch_worker

from pix2pix_jax import inception

# The PyTorch side (random weights saved as .pth files, the reference's features and resizes)
# runs in a child process: see torch_worker. This process never imports torch.
torch_worker.requires_torch()
torch_worker.want("inception")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The child's output directory and arrays: weights (seed 0) as a .pth file, features, ..."""
    assert torch_worker.INCEPTION_WEIGHTS_FILE == inception.WEIGHTS_FILE
    torch_before = torch_worker.torch_loaded()
    out = torch_worker.results("inception", tmp_path_factory)
    yield out, torch_worker.load_arrays(out)
    torch_worker.assert_torch_not_loaded_since(torch_before)


def test_features_match_pytorch(reference):
    out, arrays = reference
    variables = inception.load_fid_inception(str(out / inception.WEIGHTS_FILE))
    images = np.random.default_rng(0).uniform(-1, 1, (3, 75, 75, 3)).astype(np.float32)
    expected = arrays["features"]  # the reference network on `images`, resize=False
    # Three images in batches of two: one compiled shape, the last batch padded.
    got = inception.make_feature_fn(variables, batch_size=2, resize=False)(images)
    assert got.shape == (3, inception.FEATURES)
    assert np.abs(expected).max() > 1.0  # random weights still give non-trivial features
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("index, shape", list(enumerate(torch_worker.RESIZE_SHAPES)))
def test_preprocess_resizes_as_pytorch_fid(reference, index, shape):
    images = np.random.default_rng(1).uniform(-1, 1, shape).astype(np.float32)
    # F.interpolate(size=(299, 299), mode="bilinear", align_corners=False) of `images` (NCHW),
    # grayscale repeated to R, G and B first.
    expected = reference[1][f"resize/{index}"]
    got = np.asarray(inception.preprocess(images))
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_preprocess_rejects_what_the_network_cannot_take():
    with pytest.raises(ValueError, match="1, 3 or 4 channels"):
        inception.preprocess(np.zeros((1, 80, 80, 2)))
    with pytest.raises(ValueError, match="at least 75x75"):
        inception.preprocess(np.zeros((1, 64, 64, 3)), resize=False)


def test_wrong_weights_are_named(reference, tmp_path):
    out, _ = reference
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        inception.load_fid_inception(str(tmp_path / "missing.pth"))

    def fails(name, match):
        # The weights of seed 1, changed as `name` says (torch_worker.inception_job).
        with pytest.raises(ValueError, match=match):
            inception.load_fid_inception(str(out / f"{name}.pth"))

    fails("missing_mixed_7c", "missing.*Mixed_7c")
    fails("wrong_shape", "Mixed_6b.branch1x1")  # Mixed_6b.branch1x1.conv.weight: zeros(3, 3)
    fails("unexpected_key", "unexpected key 'model.model")  # plus model.model.0.weight
