"""One evaluation loop for training's periodic evals and the `evaluate` command.

`evaluate(p_eval, state, config, source, consumers)` runs the pmapped eval
step over a split and returns the mean per-image metrics (L1, PSNR, SSIM),
plus whatever set-level metrics its consumers compute over the whole split.
A consumer sees each batch's real images (host uint8, fetched only while
some consumer wants them) and per-image metrics:

- `SampleGrid`: the first images, as the input | output | target grid;
- `FeatureDistances`: FID and KID from Inception features (see `fid`);
- the `evaluate` command's page writer (PNGs and per-image rows);
- `fcn_score.FCNScores`: the paper's FCN-scores on Cityscapes (`evaluate --fcn_weights`).
- `lpips.LPIPSDistance`: the mean LPIPS of outputs to targets (`evaluate --lpips_weights`).

Multi-process runs evaluate each process's shard of the split; means and
feature sets are gathered across processes.
"""

import dataclasses
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

import jax
import numpy as np
import tqdm
from jax.experimental import multihost_utils

from pix2pix_jax import input_pipeline, labels, paths, writers
from pix2pix_jax.errors import DataError, MissingFileError

KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000  # torch-fidelity's defaults


@dataclasses.dataclass(frozen=True)
class Images:
    """The real (unpadded) images of one eval batch on the host, uint8 NHWC."""

    inputs: np.ndarray
    outputs: np.ndarray
    targets: np.ndarray


class Consumer(Protocol):
    """Something that reads every eval batch: images, per-image metrics, or both."""

    def wants_images(self) -> bool:
        """Whether it needs the next batch's host images (fetching them costs a transfer)."""

    def add(self, images: Images | None, per_image: dict[str, np.ndarray]) -> None:
        """One batch: its images (None when no consumer wants them) and per-image metrics."""

    def result(self) -> dict[str, float]:
        """The consumer's set-level metrics (may be empty), after the last batch."""


def eval_outputs(p_eval, state, config, source) -> Iterator[tuple]:
    """The eval step over this process's share of the split, one batch at a time.

    Yields (mask, batch, generated images, per-image metrics): the batch on
    the host, the rest on the devices, all shaped [devices, per-device batch,
    ...]; `mask` is False for padding. A label-map input is yielded coloured
    (`labels.colorize`), as the sample grids show it.
    """
    for batch in input_pipeline.eval_batches(config, source):
        mask = batch.pop("mask")
        fake, per_image = p_eval(state, batch)
        if config.dataset.get("label_nc", 0):  # ids and boundaries as a picture, for the grids
            batch = {**batch, "input": labels.colorize(batch["input"])}
        yield mask, batch, fake, per_image


def _host_images(mask: np.ndarray, batch: dict, fake: Any) -> Images:
    fake = jax.device_get(fake)
    return Images(*(writers.to_uint8(a[mask]) for a in (batch["input"], fake, batch["target"])))


def mean_metrics(sums: dict[str, float], count: int, split: str) -> dict[str, float]:
    """Means over the images of all processes, from each process's sums and count."""
    if jax.process_count() > 1:  # each process evaluated its own shard of the split
        names = sorted(sums)
        totals = multihost_utils.process_allgather(np.array([count] + [sums[k] for k in names]))
        count, sums = int(totals[:, 0].sum()), dict(zip(names, totals[:, 1:].sum(0), strict=True))
    if count == 0:
        raise DataError(f"eval split {split!r} is empty")
    return {k: float(v) / count for k, v in sums.items()}


def gather_rows(rows: np.ndarray) -> np.ndarray:
    """The rows of every process, concatenated in process order (counts may differ)."""
    counts = multihost_utils.process_allgather(np.array(len(rows)))
    padded = np.zeros((int(counts.max()), *rows.shape[1:]), rows.dtype)
    padded[: len(rows)] = rows
    gathered = multihost_utils.process_allgather(padded)
    return np.concatenate([g[:n] for g, n in zip(gathered, counts, strict=True)])


def evaluate(
    p_eval: Callable,
    state: Any,
    config: Any,
    source: Any,
    consumers: Sequence[Consumer] = (),
    progress: bool = False,
) -> dict[str, float]:
    """Mean per-image metrics over the split, updated with every consumer's result."""
    sums: dict[str, float] = {}
    count = 0
    batches: Iterable = eval_outputs(p_eval, state, config, source)
    if progress:
        total = -(-len(source) // config.eval.batch_size)
        batches = tqdm.tqdm(batches, total=total, unit="batch", file=sys.stdout)
    for mask, batch, fake, per_image in batches:
        per_image = {k: np.asarray(v)[mask] for k, v in jax.device_get(per_image).items()}
        for name, values in per_image.items():
            sums[name] = sums.get(name, 0.0) + float(np.sum(values))
        count += int(mask.sum())
        wanted = any(c.wants_images() for c in consumers)
        images = _host_images(mask, batch, fake) if wanted else None
        for consumer in consumers:
            consumer.add(images, per_image)
    results = mean_metrics(sums, count, config.eval.split)
    for consumer in consumers:
        results.update(consumer.result())
    return results


class SampleGrid:
    """The first `num_samples` images of the split as one input | output | target grid."""

    def __init__(self, num_samples: int):
        self.num_samples = num_samples
        self.rows: list[Images] = []

    def wants_images(self) -> bool:
        """Only until it has its images."""
        return sum(len(r.inputs) for r in self.rows) < self.num_samples

    def add(self, images: Images | None, per_image: dict[str, np.ndarray]) -> None:
        """Keep the batch's images while the grid is not full."""
        if images is not None and self.wants_images():
            self.rows.append(images)

    def result(self) -> dict[str, float]:
        """No metrics: the grid is read with `grid()`."""
        return {}

    def grid(self) -> np.ndarray:
        """The grid, a uint8 HWC image."""
        parts = [
            np.concatenate([getattr(r, f) for r in self.rows])[: self.num_samples]
            for f in ("inputs", "outputs", "targets")
        ]
        return writers.sample_grid(*parts)


def inception_features(weights: str) -> Callable[[np.ndarray], np.ndarray]:
    """The FID Inception feature function of pytorch-fid's weights file `weights`."""
    from pix2pix_jax import inception  # only FID needs it

    if not paths.is_file(weights):
        raise MissingFileError(f"inception_weights {weights!r}: no such file")
    return inception.make_feature_fn(inception.load_fid_inception(weights))


class FeatureDistances:
    """FID and KID between the Inception features of the generated and the target images.

    Features are computed in chunks on the images as saved (uint8), as FID
    tools that read PNGs see them.
    """

    CHUNK = 256  # images held before a feature pass: bounded memory, few calls

    def __init__(self, feature_fn: Callable[[np.ndarray], np.ndarray]):
        self.feature_fn = feature_fn
        self.pending: list[tuple[np.ndarray, np.ndarray]] = []
        self.fake: list[np.ndarray] = []
        self.real: list[np.ndarray] = []

    def wants_images(self) -> bool:
        """Every batch's images."""
        return True

    def add(self, images: Images | None, per_image: dict[str, np.ndarray]) -> None:
        """Queue the batch's generated and target images."""
        self.pending.append((images.outputs, images.targets))
        if sum(len(f) for f, _ in self.pending) >= self.CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self.pending:
            return
        fake, real = (np.concatenate(a) for a in zip(*self.pending, strict=True))
        # One pass over both sets; images in [-1, 1] as the feature function takes them.
        features = self.feature_fn(np.concatenate([fake, real]).astype(np.float32) / 127.5 - 1)
        self.fake.append(features[: len(fake)])
        self.real.append(features[len(fake) :])
        self.pending = []

    def result(self) -> dict[str, float]:
        """FID, and KID's mean and std over subsets, over the images of all processes."""
        from pix2pix_jax import fid

        self._flush()
        real, fake = np.concatenate(self.real), np.concatenate(self.fake)
        if jax.process_count() > 1:
            real, fake = (
                np.concatenate(multihost_utils.process_allgather(a)) for a in (real, fake)
            )
        kid, kid_std = fid.kernel_inception_distance(
            real, fake, num_subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE
        )
        return {"fid": fid.frechet_distance(real, fake), "kid": kid, "kid_std": kid_std}
