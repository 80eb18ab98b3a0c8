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

This module knows nothing of training: callers pass the state template.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from pix2pix_jax import metrics
from pix2pix_jax.errors import CheckpointError, MissingFileError

FORMAT = 2  # 1: pix2pix_jax 0.1 (automatic layer names, no meta item); 2: explicit names
META = {"format": FORMAT}


def _manager(directory: str, max_to_keep: int | None) -> ocp.CheckpointManager:
    return ocp.CheckpointManager(
        os.path.abspath(directory),
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
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(jax.device_get(state)),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(META),
            ),
        )

    def restore(self, step: int, template: Any) -> tuple[Any, dict]:
        """The (state, data iterator state) saved at `step`, shaped like `template`."""
        check_format(self.manager.directory, step)
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(template), data=ocp.args.JsonRestore()
            ),
        )
        return restored["state"], restored["data"]

    def close(self) -> None:
        """Wait for pending saves to finish, then release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


BEST_DIR = "checkpoints_best"  # beside checkpoints/, which resuming alone reads


def check_format(directory: Any, step: int) -> None:
    """Raise a CheckpointError unless the checkpoint of `step` has this release's format."""
    meta = os.path.join(str(directory), str(step), "meta")
    if not os.path.exists(meta):
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
        record = self.record()
        self.best = record["value"] if record and record.get("metric") == metric else None

    def record(self) -> dict | None:
        """The record of the kept checkpoint, or None when there is none."""
        step = self.manager.latest_step()
        if step is None:
            return None
        restored = self.manager.restore(step, args=ocp.args.Composite(best=ocp.args.JsonRestore()))
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
        self.manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(jax.device_get(state)),
                best=ocp.args.JsonSave(record),
                meta=ocp.args.JsonSave(META),
            ),
        )
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


def restore_state(workdir: str, template: Any, which: str | int = "latest") -> tuple[Any, int]:
    """(train state on the host, step) of a checkpoint in `workdir`, shaped like `template`.

    `which` is 'latest' (the newest in checkpoints/), 'best' (the one in
    checkpoints_best/) or a step number of checkpoints/.
    """
    if which not in ("latest", "best") and not str(which).isdigit():
        raise CheckpointError(f"checkpoint={which!r} is not 'latest', 'best' or a step number")
    directory = os.path.join(
        os.path.abspath(workdir), BEST_DIR if which == "best" else "checkpoints"
    )
    if not os.path.isdir(directory):
        _resolve_step(directory, [], which)  # raises: no checkpoint
    manager = _manager(directory, max_to_keep=None)
    try:
        step = _resolve_step(directory, sorted(manager.all_steps()), which)
        check_format(directory, step)
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(template))
        )
    finally:
        manager.close()
    return restored["state"], step
