"""A few real train steps for every generator and every discriminator option.

Each case pairs one generator with one discriminator (and a norm or channel
option) so that every choice trains at least once without many compilations.
"""

import flax.jax_utils
import jax
import numpy as np
import pytest

from pix2pix_jax import assembly, parallel, steps
from pix2pix_jax import config as config_lib

CASES = {
    "encoder_decoder+pixel": dict(generator="encoder_decoder", discriminator="pixel"),
    "resnet_6blocks+n_layers1+instance": dict(
        generator="resnet_6blocks", discriminator="n_layers", n_layers_d=1, norm="instance"
    ),
    "resnet_9blocks+basic+none": dict(
        generator="resnet_9blocks", discriminator="basic", norm="none"
    ),
    "unet_128+n_layers5+sync_batch": dict(
        generator="unet_128", discriminator="n_layers", n_layers_d=5, norm="sync_batch", size=128
    ),
    "unet_256+basic+gray_to_rgba": dict(generator="unet_256", size=256, channels=(1, 4)),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_option_trains(tiny_config, case):
    options = dict(CASES[case])
    size = options.pop("size", 32)
    in_ch, out_ch = options.pop("channels", (3, 3))
    tiny_config.image_size = size
    tiny_config.dataset.input_channels, tiny_config.dataset.output_channels = in_ch, out_ch
    tiny_config.model.ngf = tiny_config.model.ndf = 4
    tiny_config.model.update(options)
    config_lib.validate(tiny_config)
    setup = assembly.make_setup(tiny_config, num_train_examples=8)
    initial = assembly.initial_state(tiny_config, setup)
    state = flax.jax_utils.replicate(initial, axis_name="batch")
    n = jax.local_device_count()
    rng = np.random.default_rng(0)
    batch = {
        "input": rng.uniform(-1, 1, (n, 2 // n, size, size, in_ch)).astype(np.float32),
        "target": rng.uniform(-1, 1, (n, 2 // n, size, size, out_ch)).astype(np.float32),
    }
    step = parallel.pmap_train_step(steps.train_step, setup=setup)
    for _ in range(2):
        state, metrics = step(state, batch)
    metrics = jax.device_get(metrics)
    assert all(np.isfinite(v).all() for v in metrics.values()), metrics
    final = jax.device_get(flax.jax_utils.unreplicate(state))
    assert int(final.step) == 2
    for name in ("g_params", "d_params"):
        before, after = (
            jax.tree.leaves(getattr(initial, name)),
            jax.tree.leaves(getattr(final, name)),
        )
        assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)), name
