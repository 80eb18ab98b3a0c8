"""One run per workdir, and a run that cannot work stops before it writes anything.

The lock's holder in these tests is a small child process that takes the
same `RunLock` a training takes (a real training would only add minutes);
the run it blocks is the real command line.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from conftest import make_tiny_config

from pix2pix_jax import checkpointing, trainer
from pix2pix_jax import config as config_lib
from pix2pix_jax import workdir as workdir_lib
from pix2pix_jax.errors import ConfigError, WorkdirError

TESTS = os.path.dirname(os.path.abspath(__file__))
HOLD_LOCK = textwrap.dedent(
    """
    import os, signal, sys
    from pix2pix_jax import workdir
    lock = workdir.RunLock(sys.argv[1])
    lock.acquire()
    print("locked", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # no release: the kernel drops the flock
    sys.stdin.read()  # hold until the test closes stdin
    lock.release()
    """
)


def hold_lock(workdir, mode="hold"):
    """A child process holding `workdir`'s run lock (mode 'die': SIGKILLed while holding it)."""
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(workdir), mode],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert child.stdout.readline().strip() == "locked"
    return child


def tiny_cli(workdir, data_dir, *overrides):
    config = make_tiny_config(data_dir)
    return [
        sys.executable, "-m", "pix2pix_jax.main", f"--workdir={workdir}",
        f"--config.dataset.name={config.dataset.name}", f"--config.dataset.data_dir={data_dir}",
        f"--config.image_size={config.image_size}", f"--config.model.ngf={config.model.ngf}",
        f"--config.model.ndf={config.model.ndf}", f"--config.batch_size={config.batch_size}",
        f"--config.eval.batch_size={config.eval.batch_size}", *overrides,
    ]  # fmt: skip


def test_a_second_run_stops_at_once_naming_the_workdir_and_the_holder(tmp_path, data_dir):
    workdir = tmp_path / "run"
    workdir.mkdir()
    holder = hold_lock(workdir)
    try:
        result = subprocess.run(tiny_cli(workdir, data_dir), capture_output=True, text=True,
                                timeout=600)  # fmt: skip
    finally:
        holder.communicate("")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    error = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error) == 1, result.stderr[-3000:]
    assert error[0].startswith(
        f"pix2pix_jax: error: workdir {workdir} is in use by another run (pid {holder.pid} on "
        f"{os.uname().nodename}, started 20"
    )
    assert sorted(os.listdir(workdir)) == [".lock"]  # no config.json, metrics or checkpoints


def test_the_lock_of_a_killed_run_is_taken_over_and_said_so(tmp_path, capsys):
    holder = hold_lock(tmp_path, "die")
    assert holder.wait() == -signal.SIGKILL
    with workdir_lib.RunLock(str(tmp_path)):
        out = capsys.readouterr().out
        assert f"previous run in this workdir (pid {holder.pid} on" in out
        assert "ended without releasing it; taking over" in out
        with pytest.raises(WorkdirError, match=f"pid {os.getpid()} on"):
            workdir_lib.RunLock(str(tmp_path)).acquire()  # held: by this process, now
    with workdir_lib.RunLock(str(tmp_path)):  # a clean release leaves nothing to take over
        assert "taking over" not in capsys.readouterr().out


def test_the_lock_is_released_when_a_run_fails(tmp_path, data_dir):
    config = make_tiny_config(data_dir)
    config.dataset.name = "no_such_dataset"  # fails in the run, after the lock was taken
    with pytest.raises(Exception, match="no_such_dataset"):
        trainer.train_and_evaluate(config, str(tmp_path))
    assert os.path.exists(tmp_path / ".lock")
    with workdir_lib.RunLock(str(tmp_path)):
        pass


def test_readers_restore_beside_a_running_training(tmp_path):
    template = {"w": np.zeros((4, 3), np.float32), "step": np.zeros((), np.int32)}
    state = {"w": np.arange(12, dtype=np.float32).reshape(4, 3), "step": np.full((), 2, np.int32)}
    checkpointer = checkpointing.Checkpointer(str(tmp_path / "checkpoints"), 2)
    checkpointer.save(2, state, {"position": 7})
    checkpointer.close()
    with workdir_lib.RunLock(str(tmp_path)):  # what a training holds while it runs
        restored, step = checkpointing.restore_state(str(tmp_path), template)
    assert step == 2
    np.testing.assert_array_equal(restored["w"], state["w"])


AS_NOBODY = textwrap.dedent(
    """
    import os, sys
    sys.path.insert(0, sys.argv[3])
    import jax
    from conftest import make_tiny_config
    from pix2pix_jax import trainer
    from pix2pix_jax.errors import UserError
    jax.devices()  # start the backend while its files are still readable
    os.setgid(65534); os.setuid(65534)
    try:
        trainer.train_and_evaluate(make_tiny_config(sys.argv[2]), sys.argv[1])
    except UserError as e:
        print(type(e).__name__, e)
    """
)


def unwritable(tmp_path):
    path = tmp_path / "readonly"
    path.mkdir()
    path.chmod(0o555)
    return str(path)


@pytest.mark.parametrize("kind", ["a file", "/proc", "no permission"])
def test_an_unusable_workdir_stops_before_anything_is_written(tmp_path, data_dir, kind):
    path = {"a file": str(tmp_path / "file"), "/proc": "/proc/pix2pix_run"}.get(kind)
    path = path or unwritable(tmp_path)
    if kind == "a file":
        (tmp_path / "file").write_text("not a folder")
    if kind == "no permission" and os.geteuid() == 0:  # root writes anywhere: run as nobody
        result = subprocess.run([sys.executable, "-c", AS_NOBODY, path, data_dir, TESTS],
                                capture_output=True, text=True, timeout=600)  # fmt: skip
        expected = f"WorkdirError workdir {path} (is not writable|cannot be created)"
        assert re.match(expected, result.stdout), result.stdout + result.stderr[-2000:]
    else:
        with pytest.raises(
            WorkdirError, match=f"workdir {path} (is a file|cannot be created|is not)"
        ):
            trainer.train_and_evaluate(make_tiny_config(data_dir), path)
    assert not os.path.isdir(path) or os.listdir(path) == []


@pytest.mark.parametrize(("field", "value"), [("ngf", 0), ("ndf", 0), ("ngf", -8)])
def test_degenerate_network_sizes_are_refused_naming_the_field(tmp_path, data_dir, field, value):
    config = make_tiny_config(data_dir)
    config.model[field] = value
    with pytest.raises(ConfigError, match=f"model.{field} must be a positive integer"):
        config_lib.validate(config)
    with pytest.raises(ConfigError):
        trainer.train_and_evaluate(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")


def test_a_damaged_checkpoint_policy_is_validated(data_dir):
    config = make_tiny_config(data_dir)
    config.damaged_checkpoint = "ignore"
    with pytest.raises(ConfigError, match="damaged_checkpoint='ignore' is not one of"):
        config_lib.validate(config)


ON_TWO_DEVICES = textwrap.dedent(
    """
    import os, sys
    os.environ["XLA_FLAGS"] += " --xla_force_host_platform_device_count=2"
    sys.path.insert(0, sys.argv[3])
    from conftest import make_tiny_config
    from pix2pix_jax import trainer
    from pix2pix_jax.errors import ConfigError
    config = make_tiny_config(sys.argv[2])
    config.eval.batch_size = 3
    try:
        trainer.train_and_evaluate(config, sys.argv[1])
    except ConfigError as e:
        print(e)
    """
)


def test_an_eval_batch_that_does_not_split_over_the_devices_stops_before_writing(
    tmp_path, data_dir
):
    workdir = str(tmp_path / "run")
    result = subprocess.run([sys.executable, "-c", ON_TWO_DEVICES, workdir, data_dir, TESTS],
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.stdout.strip() == "eval.batch_size=3 must be divisible by the 2 devices", (
        result.stdout + result.stderr[-2000:]
    )
    assert not os.path.exists(workdir)


def test_the_holder_record_is_json_with_host_pid_and_start(tmp_path):
    with workdir_lib.RunLock(str(tmp_path)), open(tmp_path / ".lock") as f:
        holder = json.load(f)
    assert holder["pid"] == os.getpid() and holder["host"] == os.uname().nodename
    assert holder["started"] > 0
