"""Shared fixtures: a tiny config on the small synthetic dataset, prepared once."""

import gc
import os

import jax
import pytest

from pix2pix_jax.configs import default

# The tests' programs are tiny: XLA:CPU compiling them at LLVM -O0 takes about 30% less
# time, and their run time is negligible either way. Set before JAX starts its backend
# (here, at collection); the command-line subprocesses inherit it.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()

# Files whose module fixtures share one expensive session artefact run in one worker.
SHARED_WORKER = {
    "test_best_checkpoint": "trained_workdir",
    "test_evaluate": "trained_workdir",
    "test_predict": "trained_workdir",
    "test_native_predict": "trained_workdir",
    "test_export": "trained_workdir",
    "test_demo": "trained_workdir",
}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """Keep each file's tests (and the files in SHARED_WORKER) in one xdist worker.

    First among the hooks: xdist's worker turns the marker into the group it
    schedules by in its own hook, and a marker added after that is ignored.
    """
    for item in items:
        module = item.module.__name__
        item.add_marker(pytest.mark.xdist_group(SHARED_WORKER.get(module, module)))


CACHE_MAX_BYTES = 8 * 2**30  # far above what the suite writes: a limit for the lock's sake


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One persistent compilation cache for the test processes and the runs they start.

    Many tests compile the same tiny programs, in this process or in the
    `python -m pix2pix_jax.main` (and other command) runs they start: sharing
    compiled programs across processes is much of the suite's speed. Entries
    are written in place; with a size limit, every read and write holds the
    cache's file lock, so no process loads an entry that another is still writing.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the session's folder, shared by its workers
    # A child session (test_cloud.py runs one) shares its parent's cache.
    path = os.environ.get("PIX2PIX_TEST_JAX_CACHE") or str(root / "jax_cache")
    os.makedirs(path, exist_ok=True)
    settings = {
        "jax_compilation_cache_dir": path,
        "jax_compilation_cache_max_size": CACHE_MAX_BYTES,
        "jax_persistent_cache_min_compile_time_secs": 0.5,
    }
    for name, value in settings.items():
        jax.config.update(name, value)  # this process
        os.environ[name.upper()] = str(value)  # the processes it starts
    return path


@pytest.fixture(scope="module", autouse=True)
def release_compiled_programs():
    """Free each file's compiled programs when the file is done.

    XLA:CPU maps every executable it loads into a few memory regions of its
    own, and JAX's caches keep executables alive: a worker that ran hundreds of
    tests reached the kernel's limit of memory maps per process
    (vm.max_map_count, 65530) and crashed in the next compilation (LLVM's
    "Unable to allocate section memory", or a segfault when another allocation
    failed first).
    """
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("tfds"))


def make_tiny_config(data_dir: str):
    """The default config shrunk to seconds: 32x32 images, 8 filters, 4 steps."""
    config = default.get_config()
    config.dataset.name = "synthetic_facades/res32_small"
    config.dataset.data_dir = data_dir
    config.image_size = 32
    config.batch_size = 2
    config.num_train_steps = 4
    config.model.ngf = 8
    config.model.ndf = 8
    config.log_every_steps = 2
    config.eval_every_steps = 2
    config.checkpoint_every_steps = 2
    config.eval.batch_size = 4
    config.eval.num_samples = 3
    return config


@pytest.fixture
def tiny_config(data_dir):
    return make_tiny_config(data_dir)
