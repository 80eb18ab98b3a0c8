"""gs:// workdirs, datasets and weights against a local GCS emulator, in a child pytest.

The checks themselves are in `cloud_checks.py`. They run in a child process
of their own so that the clients they start in-process (gcsfs's event loop and
close threads, tensorstore's HTTP threads) never live on in a shared test
worker, where later tests compile and run XLA programs.
"""

import os
import re
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def test_cloud_checks_pass_in_their_own_process(tmp_path):
    # The child shares this session's compilation cache (see conftest.compilation_cache).
    env = {**os.environ, "PIX2PIX_TEST_JAX_CACHE": os.environ["JAX_COMPILATION_CACHE_DIR"]}
    del env["JAX_COMPILATION_CACHE_DIR"]  # the child's own process stays off it, as workers do
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0",
         f"--basetemp={tmp_path / 'basetemp'}", os.path.join(HERE, "cloud_checks.py")],
        capture_output=True, text=True, env=env, cwd=os.path.dirname(HERE), timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    if "skipped" in result.stdout:  # the emulator or gcsfs is not installed: say which
        pytest.skip(re.findall(r"SKIPPED.*", result.stdout)[-1] if "SKIPPED" in result.stdout
                    else result.stdout[-500:])  # fmt: skip
    assert " passed" in result.stdout, result.stdout[-2000:]
