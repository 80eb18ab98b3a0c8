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
"""

import functools
import json
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from pix2pix_jax.configs import default


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
            ),
        )

    def restore(self, step: int, template: Any) -> tuple[Any, dict]:
        """The (state, data iterator state) saved at `step`, shaped like `template`."""
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


#: Metrics that can pick the best checkpoint, and whether lower or higher is better.
BEST_DIRECTIONS = {"l1": "lower", "psnr": "higher", "ssim": "higher"}
BEST_DIR = "checkpoints_best"  # beside checkpoints/, which resuming alone reads


def improves(metric: str, value: float, best: float | None) -> bool:
    """Whether `value` of `metric` is strictly better than `best` (None: nothing yet).

    A non-finite value never is.
    """
    if metric not in BEST_DIRECTIONS:
        raise ValueError(
            f"eval.best_metric={metric!r} is not one of {tuple(BEST_DIRECTIONS)} (or '' for none)"
        )
    if not math.isfinite(value):
        return False
    if best is None:
        return True
    return value < best if BEST_DIRECTIONS[metric] == "lower" else value > best


class BestCheckpointer:
    """Keeps one checkpoint: the train state of the eval with the best `metric` so far.

    It lives in its own directory (`checkpoints_best/`) with its own manager,
    so resuming, which reads `checkpoints/` only, never sees it. The record
    saved with it (metric, value, step and the eval's results) carries the
    best value across resumed runs; a record of another metric is replaced by
    the first eval of this one.
    """

    def __init__(self, directory: str, metric: str):
        improves(metric, 0.0, None)  # rejects an unknown metric now, not at the first eval
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
        if not improves(self.metric, value, self.best):
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
            ),
        )
        self.best = value
        return True

    def close(self) -> None:
        """Wait for a pending save to finish, then release the manager."""
        self.manager.wait_until_finished()
        self.manager.close()


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run wrote to `workdir`/config.json, over today's defaults.

    Fields added to the defaults since the run keep their default values.
    """
    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"workdir {workdir!r} does not exist")
    path = os.path.join(workdir, "config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {workdir!r} a pix2pix_jax workdir?")
    try:
        with open(path) as f:
            saved = json.load(f)
        config = default.get_config()
        config.update(saved)
    except (json.JSONDecodeError, TypeError, ValueError, KeyError) as e:
        raise ValueError(f"{path}: not a usable pix2pix_jax config ({e})") from e
    return config


def _resolve_step(directory: str, steps: list[int], which: str | int) -> int:
    """The step that `which` ('latest', 'best' or a step number) names among `steps`."""
    if not steps:
        hint = " (training keeps one when eval.best_metric is set)" if which == "best" else ""
        raise FileNotFoundError(f"no checkpoint in {directory}{hint}")
    if which in ("latest", "best"):
        return steps[-1]
    step = int(which)
    if step not in steps:
        raise ValueError(f"no checkpoint of step {step} in {directory}; it has steps {steps}")
    return step


def restore_for_inference(workdir: str, which: str | int = "latest") -> tuple[Any, Any, int]:
    """(config, train state on the host, step) of a checkpoint in `workdir`.

    `which` is 'latest' (the newest in checkpoints/), 'best' (the one in
    checkpoints_best/) or a step number of checkpoints/.
    """
    if which not in ("latest", "best") and not str(which).isdigit():
        raise ValueError(f"checkpoint={which!r} is not 'latest', 'best' or a step number")
    workdir = os.path.abspath(workdir)
    config = load_config(workdir)
    directory = os.path.join(workdir, BEST_DIR if which == "best" else "checkpoints")
    if not os.path.isdir(directory):
        _resolve_step(directory, [], which)  # raises: no checkpoint
    manager = _manager(directory, max_to_keep=None)
    try:
        step = _resolve_step(directory, sorted(manager.all_steps()), which)
        restored = manager.restore(
            step, args=ocp.args.Composite(state=ocp.args.StandardRestore(_template(config)))
        )
    finally:
        manager.close()
    return config, restored["state"], step


def inference_setup(config: ml_collections.ConfigDict) -> Any:
    """The `steps.Setup` of `config` for running (not training) its networks.

    Unlike `train.make_setup` it never reads the train split: the optimizer
    it builds has the right state layout, whatever its schedule's values.
    """
    # Imported here: train imports this module to save the checkpoints this reads.
    from pix2pix_jax import train

    return train.make_setup(config, num_train_examples=1)


def _template(config: ml_collections.ConfigDict) -> Any:
    """A host train state of zeros shaped as `config`'s, without running the networks."""
    from pix2pix_jax import steps  # here, as in inference_setup

    setup = inference_setup(config)
    shape = (config.image_size, config.image_size, config.dataset.output_channels)
    abstract = jax.eval_shape(
        functools.partial(steps.init_state, setup, shape, config.dataset.input_channels)
    )
    return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)
