"""Where results go: metrics.jsonl, TensorBoard event files and sample grids."""

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image


class MetricWriter:
    """Appends one JSON object per call to metrics.jsonl and mirrors it to TensorBoard.

    A run resumed from the checkpoint of step N passes `keep_through=N`: the
    lines of later steps, written by the run that was interrupted and about
    to be written again, are dropped from metrics.jsonl (with a torn last
    line), and TensorBoard is told to purge its events after N.
    """

    def __init__(self, workdir: str, keep_through: int | None = None):
        with _without_torch():  # imported here: only process 0 writes
            from tensorboardX import SummaryWriter

        path = os.path.join(workdir, "metrics.jsonl")
        if keep_through is not None and os.path.exists(path):
            drop_lines_after(path, keep_through)
        self._jsonl = open(path, "a")  # noqa: SIM115
        purge = None if keep_through is None else keep_through + 1
        self._tb = SummaryWriter(workdir, purge_step=purge)

    def write(
        self,
        step: int,
        metrics: dict[str, float],
        split: str = "train",
        seed: int | str | None = None,
    ) -> None:
        """Record `metrics` of `split` at `step` (of one replica's `seed`, or "all" of them)."""
        record = {"step": step} if split == "train" else {"step": step, "split": split}
        if seed is not None:
            record["seed"] = seed
        record.update({k: float(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        prefix = split if seed is None else f"{split}/seed_{seed}"
        for name, value in metrics.items():
            self._tb.add_scalar(f"{prefix}/{name}", float(value), step)

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        """Record an HWC uint8 image in TensorBoard."""
        self._tb.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close both outputs."""
        self._jsonl.close()
        self._tb.close()


def _kept(line: str, keep_through: int) -> bool:
    try:
        return json.loads(line)["step"] <= keep_through
    except (ValueError, KeyError, TypeError):  # torn by a kill mid-write
        return False


def drop_lines_after(path: str, keep_through: int) -> int:
    """Rewrite the metrics file `path` without lines of steps after `keep_through`.

    The new file replaces the old one by a rename, so a kill leaves one of
    the two whole. Returns the number of lines dropped.
    """
    with open(path) as f:
        lines = f.readlines()
    kept = [line for line in lines if line.endswith("\n") and _kept(line, keep_through)]
    if len(kept) == len(lines):
        return 0
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(kept)
    os.replace(tmp, path)
    return len(lines) - len(kept)


@contextlib.contextmanager
def _without_torch() -> Iterator[None]:
    """Keep tensorboardX from importing torch, which it tries for optional features.

    A training run has no use for torch; importing it costs seconds and
    memory. Where the user's process already holds torch, it is left alone.
    """
    if "torch" in sys.modules:
        yield
        return
    sys.modules["torch"] = None  # makes `import torch` raise ImportError
    try:
        yield
    finally:
        del sys.modules["torch"]


def to_uint8(images: Any) -> np.ndarray:
    """Images in [-1, 1] to uint8 in [0, 255]; uint8 images pass through."""
    if np.asarray(images).dtype == np.uint8:
        return np.asarray(images)
    return np.asarray(
        np.clip((np.asarray(images, np.float32) + 1.0) * 127.5 + 0.5, 0, 255), np.uint8
    )


def sample_grid(inputs: Any, outputs: Any, targets: Any) -> np.ndarray:
    """One row per example: input | output | target, as a uint8 HWC image."""
    triples = zip(inputs, outputs, targets, strict=True)
    rows = [np.concatenate([to_uint8(im) for im in triple], axis=1) for triple in triples]
    return np.concatenate(rows, axis=0)


def save_png(path: str, image: np.ndarray) -> None:
    """Write a uint8 HWC image (RGB, or 1-channel gray) as PNG, creating folders."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(path)
