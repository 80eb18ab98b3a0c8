"""Where results go: metrics.jsonl, TensorBoard event files and sample grids.

In a URI workdir (`gs://bucket/run`) the same files go to the object store.
Objects cannot be appended to, so there metrics.jsonl is held in memory and
the whole object is replaced: at each eval line, at each checkpoint step's
line, at most every `UPLOAD_SECONDS` otherwise, and at close. The object is
always whole lines (an upload is all or nothing), every line through the last
checkpoint is in it, and it stays one file that `grep` reads
(`gcloud storage cat gs://bucket/run/metrics.jsonl | grep ...`). TensorBoard
event files are likewise uploaded whole at each of tensorboardX's flushes.
"""

import contextlib
import io
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from PIL import Image

from pix2pix_jax import paths

#: On an object store, metrics.jsonl is uploaded at least this often while lines come in.
UPLOAD_SECONDS = 30.0


class MetricWriter:
    """Appends one JSON object per call to metrics.jsonl and mirrors it to TensorBoard.

    A run resumed from the checkpoint of step N passes `keep_through=N`: the
    lines of later steps, written by the run that was interrupted and about
    to be written again, are dropped from metrics.jsonl (with a torn last
    line), and TensorBoard is told to purge its events after N.
    """

    def __init__(self, workdir: str, keep_through: int | None = None, sync_every_steps: int = 0):
        """`sync_every_steps` (URI workdirs): upload metrics.jsonl at every such step's line."""
        with _without_torch():  # imported here: only process 0 writes
            from tensorboardX import SummaryWriter

        path = os.path.join(workdir, "metrics.jsonl")
        if paths.is_uri(workdir):
            self._jsonl = _ObjectLines(path, keep_through, sync_every_steps)
            _register_tensorboard_store(paths.scheme(workdir))
        else:
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
        if isinstance(self._jsonl, _ObjectLines):
            self._jsonl.sync_if_due(step, force=split != "train")  # evals are rare: keep each
        else:
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


class _ObjectLines:
    """metrics.jsonl as one object: lines kept in memory, the whole object replaced on sync."""

    def __init__(self, path: str, keep_through: int | None, sync_every_steps: int):
        self.path, self.sync_every_steps = path, sync_every_steps
        lines = paths.read_text(path).splitlines(keepends=True) if paths.exists(path) else []
        if keep_through is not None:
            lines = [ln for ln in lines if ln.endswith("\n") and _kept(ln, keep_through)]
        self.lines, self.dirty = lines, keep_through is not None
        self.synced = -float("inf")  # the first line goes up at once

    def write(self, text: str) -> None:
        """Add a line (uploaded at the next sync)."""
        self.lines.append(text)
        self.dirty = True

    def sync_if_due(self, step: int, force: bool = False) -> None:
        """Upload if forced, at a sync step, or `UPLOAD_SECONDS` after the last upload."""
        at_sync_step = self.sync_every_steps and step % self.sync_every_steps == 0
        if force or at_sync_step or time.monotonic() - self.synced >= UPLOAD_SECONDS:
            self.sync()

    def sync(self) -> None:
        """Replace the object with all lines, if any were added since the last upload."""
        if self.dirty:
            paths.write_text(self.path, "".join(self.lines))
            self.dirty, self.synced = False, time.monotonic()

    def close(self) -> None:
        """Upload what is pending."""
        self.sync()


class _ObjectRecordWriter:
    """A TensorBoard event file on an object store: buffered, uploaded whole at each flush."""

    def __init__(self, path: str):
        self.path, self.buffer, self.closed = path, io.BytesIO(), False

    def write(self, data: bytes) -> None:
        """Add bytes to the event file."""
        self.buffer.write(data)

    def flush(self) -> None:
        """Upload the event file as it stands (every flush_secs, and at close)."""
        paths.write_bytes(self.path, self.buffer.getvalue())

    def close(self) -> None:
        """The final upload."""
        if not self.closed:
            self.flush()
            self.closed = True


class _ObjectRecordWriterFactory:
    """tensorboardX's hook for a URI scheme: event files through `paths`, not its own clients."""

    def open(self, path: str) -> _ObjectRecordWriter:
        """A writer of the event file at `path`."""
        return _ObjectRecordWriter(path)

    def directory_check(self, path: str) -> None:
        """Nothing to create: objects need no folders."""


def _register_tensorboard_store(scheme: str) -> None:
    """Make tensorboardX write event files of `scheme`:// URIs through `paths` (gcsfs for gs)."""
    from tensorboardX import record_writer

    record_writer.register_writer_factory(scheme, _ObjectRecordWriterFactory())


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
    """Write a uint8 HWC image (RGB, or 1-channel gray) as PNG, creating folders (or a URI)."""
    picture = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    if paths.is_uri(path):
        paths.write_bytes(path, paths.png_bytes(picture))
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    picture.save(path)
