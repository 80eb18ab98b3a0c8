"""Orbax checkpoints of the train state and the data iterator's position.

A checkpoint at step k holds the state after k updates and the grain
iterator state after the k-th batch: everything a resumed run needs to draw
the same batches and dropout masks as an uninterrupted one (the dropout keys
are derived from the step, so they need no saving). Saves are asynchronous;
orbax writes each into a temporary directory and renames it when complete, so
a save interrupted mid-write is never the one restored.
"""

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Saves and restores (train state, data iterator state) under `directory`."""

    def __init__(self, directory: str, max_to_keep: int):
        self.manager = ocp.CheckpointManager(
            os.path.abspath(directory),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=max_to_keep, create=True, enable_async_checkpointing=True
            ),
        )

    def latest_step(self) -> int | None:
        """The step of the newest complete checkpoint, or None."""
        return self.manager.latest_step()

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
