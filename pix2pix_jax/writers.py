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
    """Appends one JSON object per call to metrics.jsonl and mirrors it to TensorBoard."""

    def __init__(self, workdir: str):
        with _without_torch():  # imported here: only process 0 writes
            from tensorboardX import SummaryWriter

        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")  # noqa: SIM115
        self._tb = SummaryWriter(workdir)

    def write(self, step: int, metrics: dict[str, float], split: str = "train") -> None:
        """Record `metrics` of `split` at `step`."""
        record = {"step": step} if split == "train" else {"step": step, "split": split}
        record.update({k: float(v) for k, v in metrics.items()})
        self._jsonl.write(json.dumps(record) + "\n")
        self._jsonl.flush()
        for name, value in metrics.items():
            self._tb.add_scalar(f"{split}/{name}", float(value), step)

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        """Record an HWC uint8 image in TensorBoard."""
        self._tb.add_image(name, image, step, dataformats="HWC")

    def close(self) -> None:
        """Flush and close both outputs."""
        self._jsonl.close()
        self._tb.close()


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
