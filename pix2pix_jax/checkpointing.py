"""Orbax checkpoints of the train state and the data iterator's position.

A checkpoint at step k holds the state after k updates and the grain
iterator state after the k-th batch: everything a resumed run needs to draw
the same batches and dropout masks as an uninterrupted one (the dropout keys
are derived from the step, so they need no saving). Saves are asynchronous;
orbax writes each into a temporary directory and renames it when complete, so
a save interrupted mid-write is never the one restored.

Beside the latest checkpoints, `BestCheckpointer` keeps the one with the best
eval metric, and `restore_for_inference` loads either for evaluation and
prediction.

Every checkpoint carries a `meta` item with its format number. Checkpoints
without it were written by pix2pix_jax 0.1, whose layers had Flax's automatic
names (`Conv_3`, `Norm_5`); this release names every layer explicitly, so
those are refused with a `CheckpointError` that says so (the state layouts
differ, and guessing a mapping could load weights into the wrong layers).

The `meta` item also carries a SHA-256 of the state's bytes (and of the
iterator state), computed from the host copy that is handed to the
asynchronous write, so it is committed together with the arrays. Every
restore recomputes it over what was read back: a flipped bit is refused with
a `DamagedCheckpointError` naming the checkpoint, as is a checkpoint whose
metadata files no longer parse (naming the file).

The directories may be URIs (`gs://bucket/run/checkpoints`): orbax writes
them through tensorstore, and this module reads metadata through
`pix2pix_jax.paths`.

This module knows nothing of training: callers pass the state template.
"""

import contextlib
import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from pix2pix_jax import metrics, paths
from pix2pix_jax.errors import CheckpointError, DamagedCheckpointError, MissingFileError

FORMAT = 2  # 1: pix2pix_jax 0.1 (automatic layer names, no meta item); 2: explicit names
META = {"format": FORMAT}
# orbax's JSON metadata files inside a checkpoint (array data and OCDBT manifests are binary).
_JSON_FILES = ("_CHECKPOINT_METADATA", "_METADATA", "metadata")


def state_digest(state: Any, data_state: Any = None) -> str:
    """SHA-256 of `state`'s leaves (path, dtype, shape, bytes; tree order) and `data_state`."""
    digest = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        array = np.ascontiguousarray(np.asarray(leaf)).reshape(-1)
        header = f"{jax.tree_util.keystr(path)}|{array.dtype.str}|{np.shape(leaf)};"
        digest.update(header.encode())
        digest.update(array.view(np.uint8).data)
    digest.update(json.dumps(data_state, sort_keys=True).encode())
    return digest.hexdigest()


def _meta(state: Any, data_state: Any) -> dict:
    return {**META, "sha256": state_digest(state, data_state)}


def _read_json(path: str) -> Any:
    try:
        return json.loads(paths.read_bytes(path))
    except (OSError, ValueError) as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DamagedCheckpointError(f"{path}: damaged checkpoint metadata ({e})") from None


def check_metadata(step_dir: str) -> dict | None:
    """Parse every JSON metadata file of the checkpoint in `step_dir`; its `meta` record.

    Raises a DamagedCheckpointError naming the first file that does not parse.
    """
    meta = None
    for path in paths.walk_files(step_dir):
        root, name = os.path.split(path)
        # "d": array data, binary (names inside it may collide with the JSON files' names)
        if name in _JSON_FILES and "d" not in os.path.relpath(root, step_dir).split(os.sep):
            record = _read_json(path)
            if name == "metadata" and os.path.basename(root) == "meta":
                meta = record
    if meta is not None and not isinstance(meta, dict):
        raise DamagedCheckpointError(f"{os.path.join(step_dir, 'meta', 'metadata')}: damaged")
    return meta


def verify(step_dir: str, meta: dict | None, state: Any, data_state: Any = None) -> None:
    """Raise a DamagedCheckpointError unless `state` (as restored) matches the saved checksum.

    Checkpoints written before checksums were saved carry none and pass.
    """
    expected = (meta or {}).get("sha256")
    if expected is not None and state_digest(state, data_state) != expected:
        raise DamagedCheckpointError(
            f"{step_dir} is damaged: its arrays do not match the checksum saved with them"
        )


def _is_closed_loop(error: BaseException | None) -> bool:
    return isinstance(error, RuntimeError) and str(error) == "Event loop is closed"


def _drop_closed_loop(unraisable: Any, fallback: Callable[[Any], None]) -> None:
    if not _is_closed_loop(unraisable.exc_value):
        fallback(unraisable)


def _drop_closed_loop_error(kind: type, error: BaseException, tb: Any, fallback: Callable) -> None:
    if not _is_closed_loop(error):
        fallback(kind, error, tb)


@contextlib.contextmanager
def quiet_failed_io() -> Iterator[None]:
    """Silence the echo of a failed orbax read or write: "Event loop is closed" tracebacks.

    When one array's read or write fails, orbax closes its event loop while
    tensorstore still completes the other arrays' futures; each completion
    then fails to reach the closed loop and is printed (one traceback per
    array, from tensorstore's threads, through `sys.excepthook` or as an
    unraisable exception). The failure itself is raised as usual. After a
    failure the filters stay until the process ends: completions keep arriving
    after the failure has been reported.
    """
    previous = sys.unraisablehook, sys.excepthook
    sys.unraisablehook = functools.partial(_drop_closed_loop, fallback=previous[0])
    sys.excepthook = functools.partial(_drop_closed_loop_error, fallback=previous[1])
    failed = True
    try:
        yield
        failed = False
    finally:
        if not failed:
            sys.unraisablehook, sys.excepthook = previous


def _restore(manager: ocp.CheckpointManager, step: int, args: ocp.args.Composite) -> Any:
    """manager.restore, with a damaged checkpoint's errors as one DamagedCheckpointError."""
    step_dir = os.path.join(str(manager.directory), str(step))
    try:
        with quiet_failed_io():
            return manager.restore(step, args=args)
    except (KeyError, TypeError, IndexError, json.JSONDecodeError) as e:
        raise DamagedCheckpointError(f"{step_dir}: damaged checkpoint metadata ({e!r})") from None
    except (ValueError, OSError) as e:
        if step_dir not in str(e):  # not a read failure inside it: e.g. a different layout
            raise
        first = str(e).strip().splitlines()[0]
        raise DamagedCheckpointError(f"{step_dir} is damaged: {first}") from None


def _manager(directory: str, max_to_keep: int | None) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        paths.resolve(directory),  # orbax needs absolute paths; URIs pass as they are
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=True
        ),
    )


class Checkpointer:
    """Saves and restores (train state, data iterator state) under `directory`."""

    def __init__(self, directory: str, max_to_keep: int):
        self.manager = _manager(directory, max_to_keep)

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of all complete checkpoints, oldest first."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: dict) -> None:
        """Start saving a host copy of `state` with the iterator state (returns early)."""
        host = jax.device_get(state)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(host),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(_meta(host, data_state)),
            ),
        )

    def restore(self, step: int, template: Any) -> tuple[Any, dict]:
        """The verified (state, data iterator state) saved at `step`, shaped like `template`."""
        step_dir = os.path.join(str(self.manager.directory), str(step))
        check_format(self.manager.directory, step)
        meta = check_metadata(step_dir)
        restored = _restore(
            self.manager,
            step,
            ocp.args.Composite(
                state=ocp.args.StandardRestore(template), data=ocp.args.JsonRestore()
            ),
        )
        verify(step_dir, meta, restored["state"], restored["data"])
        return restored["state"], restored["data"]

    def set_aside(self, step: int, destination: str) -> str:
        """Move the checkpoint of `step` to `destination`/`step` (out of resume's sight).

        Returns the new path. Only one process of a multi-host run may call it;
        every process then calls `reload`.
        """
        source = os.path.join(str(self.manager.directory), str(step))
        target = os.path.join(destination, str(step))
        paths.makedirs(destination)
        if paths.exists(target):
            target = f"{target}.{len(paths.listdir(destination))}"
        paths.move(source, target)
        return target

    def reload(self) -> None:
        """Re-read the checkpoints on disk (after another process moved one aside)."""
        self.manager.reload()

    def wait(self) -> None:
        """Block until pending saves are complete (raising their errors, if any)."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves to finish, then release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


BEST_DIR = "checkpoints_best"  # beside checkpoints/, which resuming alone reads


def best_dir(workdir: str, seed: int, num_seeds: int = 1) -> str:
    """Where the best checkpoint of the replica of `seed` lives: one folder per seed when K > 1."""
    directory = os.path.join(workdir, BEST_DIR)
    return directory if num_seeds == 1 else os.path.join(directory, f"seed_{seed}")


def check_format(directory: Any, step: int) -> None:
    """Raise a CheckpointError unless the checkpoint of `step` has this release's format."""
    meta = os.path.join(str(directory), str(step), "meta")
    if not paths.exists(meta):
        raise CheckpointError(
            f"{os.path.join(str(directory), str(step))} was written by pix2pix_jax 0.1, whose "
            "layers had Flax's automatic names; this release names layers explicitly and cannot "
            "restore it. Continue that run with pix2pix_jax 0.1, or train it again."
        )


class BestCheckpointer:
    """Keeps one checkpoint: the train state of the eval with the best `metric` so far.

    It lives in its own directory (`checkpoints_best/`) with its own manager,
    so resuming, which reads `checkpoints/` only, never sees it. The record
    saved with it (metric, value, step and the eval's results) carries the
    best value across resumed runs; a record of another metric is replaced by
    the first eval of this one.
    """

    def __init__(self, directory: str, metric: str):
        self.metric = metric
        self.manager = _manager(directory, max_to_keep=1)
        try:
            record = self.record()
        except CheckpointError as e:  # never needed to resume: a damaged one is replaced
            print(f"Note: {e}; the next eval replaces the best checkpoint.", flush=True)
            record = None
        self.best = record["value"] if record and record.get("metric") == metric else None

    def record(self) -> dict | None:
        """The record of the kept checkpoint, or None when there is none."""
        step = self.manager.latest_step()
        if step is None:
            return None
        check_metadata(os.path.join(str(self.manager.directory), str(step)))
        restored = _restore(self.manager, step, ocp.args.Composite(best=ocp.args.JsonRestore()))
        return restored["best"]

    def update(self, step: int, state: Any, results: dict[str, float]) -> bool:
        """Save `state` if `results` improve on the best so far; returns whether it did."""
        value = float(results[self.metric])
        if not metrics.improves(self.metric, value, self.best):
            return False
        self.manager.wait_until_finished()
        for old in self.manager.all_steps():
            if old >= step:  # a rerun of steps after a resume: replace, never skip
                self.manager.delete(old)
        record = {"metric": self.metric, "value": value, "step": step}
        record["results"] = {k: float(v) for k, v in results.items()}
        host = jax.device_get(state)
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(host),
                best=ocp.args.JsonSave(record),
                meta=ocp.args.JsonSave(_meta(host, None)),
            ),
        )
        # Evals are rare: wait, so that a save reported as done is done (or its error raised).
        self.manager.wait_until_finished()
        self.best = value
        return True

    def close(self) -> None:
        """Wait for a pending save to finish, then release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def _resolve_step(directory: str, steps: list[int], which: str | int) -> int:
    """The step that `which` ('latest', 'best' or a step number) names among `steps`."""
    if not steps:
        hint = " (training keeps one when eval.best_metric is set)" if which == "best" else ""
        raise MissingFileError(f"no checkpoint in {directory}{hint}")
    if which in ("latest", "best"):
        return steps[-1]
    step = int(which)
    if step not in steps:
        raise CheckpointError(f"no checkpoint of step {step} in {directory}; it has steps {steps}")
    return step


def restore_state(
    workdir: str, template: Any, which: str | int = "latest", best: str | None = None
) -> tuple[Any, int]:
    """(train state on the host, step) of a checkpoint in `workdir`, shaped like `template`.

    `which` is 'latest' (the newest in checkpoints/), 'best' (the one in
    checkpoints_best/, or in the folder `best` when given) or a step number of checkpoints/.
    """
    if which not in ("latest", "best") and not str(which).isdigit():
        raise CheckpointError(f"checkpoint={which!r} is not 'latest', 'best' or a step number")
    directory = os.path.join(
        paths.resolve(workdir), (best or BEST_DIR) if which == "best" else "checkpoints"
    )
    if not paths.is_dir(directory):
        _resolve_step(directory, [], which)  # raises: no checkpoint
    manager = _manager(directory, max_to_keep=None)
    try:
        step = _resolve_step(directory, sorted(manager.all_steps()), which)
        check_format(directory, step)
        step_dir = os.path.join(directory, str(step))
        meta = check_metadata(step_dir)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(template))
        if which != "best":  # the digest of checkpoints/ covers the iterator state too
            args = ocp.args.Composite(state=args["state"], data=ocp.args.JsonRestore())
        restored = _restore(manager, step, args)
        verify(step_dir, meta, restored["state"], restored.get("data"))
    finally:
        manager.close()
    return restored["state"], step
