"""Data-parallel equivalence: one step on 2 or 4 devices equals the step on 1 device.

With dropout off and `sync_batch` norm, splitting the global batch over devices
must not change the update beyond float32 rounding. Each device count runs in
its own process (XLA_FLAGS=--xla_force_host_platform_device_count=N).
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ONE_STEP = textwrap.dedent(
    """
    import sys
    import flax.jax_utils, jax, numpy as np
    from pix2pix_jax import assembly, parallel, steps
    from pix2pix_jax.configs import default

    config = default.get_config()
    config.image_size, config.batch_size = 32, 4
    config.model.ngf = config.model.ndf = 8
    config.model.dropout_rate = 0.0
    config.model.norm = "sync_batch"
    setup = assembly.make_setup(config)
    state = flax.jax_utils.replicate(assembly.initial_state(config, setup), axis_name="batch")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    y = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    n = jax.local_device_count()
    batch = {"input": x.reshape(n, 4 // n, 32, 32, 3), "target": y.reshape(n, 4 // n, 32, 32, 3)}
    state, metrics = parallel.pmap_train_step(steps.train_step, setup=setup)(state, batch)
    host = jax.device_get(flax.jax_utils.unreplicate({"state": state, "metrics": metrics}))
    flat = jax.tree_util.tree_flatten_with_path(host)[0]
    np.savez(sys.argv[1], **{jax.tree_util.keystr(path): leaf for path, leaf in flat})
    """
)


def one_step(tmp_path, devices):
    out = str(tmp_path / f"step_{devices}.npz")
    flags = os.environ.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
    env = dict(os.environ, XLA_FLAGS=flags)
    result = subprocess.run(
        [sys.executable, "-c", ONE_STEP, out], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out) as leaves:
        return dict(leaves)


@pytest.fixture(scope="module")
def single_device(tmp_path_factory):
    return one_step(tmp_path_factory.mktemp("dp"), 1)


@pytest.mark.parametrize("devices", [2, 4])
def test_sharded_step_equals_single_device_step(single_device, tmp_path, devices):
    sharded = one_step(tmp_path, devices)
    assert sorted(sharded) == sorted(single_device)
    for name, want in single_device.items():
        got = sharded[name]
        if "_params" in name and "opt_state" not in name:
            # Adam's first update is lr * g / (|g| + eps): where rounding moves a tiny g,
            # the update moves by up to 2 * lr; everywhere else it is the same.
            np.testing.assert_allclose(got, want, atol=4e-4, err_msg=name)
            assert np.mean(np.abs(got - want) <= 1e-6) > 0.999, name
        else:
            # Gradients (Adam's moments), batch statistics, step and losses: float32
            # rounding of sums split differently, relative to the tensor's scale.
            scale = float(np.max(np.abs(want))) if np.size(want) else 0.0
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale, err_msg=name)
