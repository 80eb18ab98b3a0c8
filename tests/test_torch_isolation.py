"""torch stays out of the pytest process.

The tests that compare with PyTorch re-expressions run the PyTorch side in a
child process (tests/torch_worker.py), and their module fixtures check in
teardown that their tests did not load torch; training keeps tensorboardX
from importing it (writers.py). Here, in a fresh process (so that the order
and selection of the session's tests do not matter): nothing loads torch.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch_worker

PROBE = textwrap.dedent(
    """
    import contextlib, json, sys, tempfile
    import pytest
    sys.path.insert(0, {tests!r})
    seen = {{}}
    # The test modules that compare with PyTorch, and the parent side of their worker.
    for name in ("torch_worker", "test_convert_weights", "test_evaluate", "test_inception"):
        # Without torch installed they skip at import (then nothing can load torch anyway).
        with contextlib.suppress(pytest.skip.Exception):
            __import__(name)
    seen["test_modules"] = "torch" in sys.modules
    from pix2pix_jax import writers
    with tempfile.TemporaryDirectory() as d:
        writers.MetricWriter(d).write(0, {{"x": 1.0}})
    seen["metric_writer"] = "torch" in sys.modules
    print(json.dumps(seen))
    """
)


@pytest.fixture(scope="module")
def loads_torch():
    """{what: whether torch was in sys.modules after it}, from one fresh process."""
    torch_worker.requires_torch()  # without torch nothing can load it
    code = PROBE.format(tests=str(torch_worker.HERE))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_torch_comparing_test_modules_does_not_load_torch(loads_torch):
    assert not loads_torch["test_modules"], "a test module (or torch_worker) imports torch"


def test_the_metric_writer_does_not_load_torch(loads_torch):
    assert not loads_torch["metric_writer"], "tensorboardX imported torch"
