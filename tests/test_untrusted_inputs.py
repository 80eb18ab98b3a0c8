"""Untrusted inputs (issue 13): inputs never overwritten, bounded memory, odd dataset folders.

Every hostile file is built here (tests/hostile_files.py). A file that once made the process
allocate hundreds of MB is read in a child process that prints its peak RSS after its imports
(the baseline of a child that only imports the module) and again after reading the file; the
difference is what the file cost. The peak is the kernel's VmHWM, the child's own max RSS:
getrusage's ru_maxrss would do, but Linux carries it over from the parent through fork and
exec, so a child's figure would never drop below the test process's. A limit on the child's
address space turns a regression into a MemoryError instead of a CI machine that swaps. The
numbers before the fix are in the comments: UNTRUSTED_CHILD_PYTHONPATH=<a checkout of the code
before it> runs the children against that code (the test process keeps today's).
"""

import bz2
import concurrent.futures
import io
import json
import os
import subprocess
import sys
import textwrap
import zlib

import hostile_files as hostile
import numpy as np
import pytest
from conftest import make_tiny_config
from PIL import Image
from test_folder_dataset import records, side_by_side

from pix2pix_jax import config as config_lib
from pix2pix_jax import input_pipeline, predict, torch_weights
from pix2pix_jax.datasets import images, pix2pix
from pix2pix_jax.errors import ConfigError, DataError

CHILD = """
import json, resource, sys
{imports}
def status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))
baseline = status_kib("VmHWM")
guard = status_kib("VmSize") * 1024 + 3 * 2**29  # 1.5 GiB of address space beyond the imports
resource.setrlimit(resource.RLIMIT_AS, (guard, guard))
out = {{}}
try:
{action}
except Exception as e:
    out["error"] = f"{{type(e).__name__}}: {{e}}"
print(json.dumps({{**out, "extra_mb": (status_kib("VmHWM") - baseline) / 1024}}))
"""


def child(imports: str, action: str, *args, timeout: int = 120) -> dict:
    """Run `action` after `imports` in a fresh interpreter (args in sys.argv); its report."""
    code = CHILD.format(imports=imports, action=textwrap.indent(textwrap.dedent(action), "    "))
    root = os.path.dirname(os.path.dirname(predict.__file__))
    env = {**os.environ, "PYTHONPATH": os.environ.get("UNTRUSTED_CHILD_PYTHONPATH", root)}
    result = subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(args[0]), env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["stdout"] = result.stdout
    return report


# --- class 2: predict never writes over its inputs -------------------------------------------


@pytest.fixture
def picture_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ("a.png", "b.jpg"):
        Image.new("RGB", (8, 8), (10, 200, 30)).save(folder / name)
    return folder


def contents(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.mark.parametrize("case", ["same folder", "inside", "via a link", "file in its folder"])
def test_predict_refuses_an_output_that_would_overwrite_an_input(tmp_path, picture_folder, case):
    before = contents(picture_folder)
    given, output = str(picture_folder), str(picture_folder)
    if case == "inside":
        output = str(picture_folder / "translated")
    elif case == "via a link":
        os.symlink(picture_folder, tmp_path / "link")
        output = str(tmp_path / "link")
    elif case == "file in its folder":
        given = str(picture_folder / "a.png")
    # The check comes first: the workdir is not even looked at.
    with pytest.raises(ConfigError, match=f"--output={output!r}.*input") as error:
        predict.predict(str(tmp_path / "no_workdir"), given, output, progress=False)
    assert str(picture_folder) in str(error.value)
    assert contents(picture_folder) == before
    assert not (picture_folder / "translated").exists()


def test_predict_refuses_to_write_through_a_hard_link_to_an_input(tmp_path, picture_folder):
    out = tmp_path / "out"
    out.mkdir()
    os.link(picture_folder / "a.png", out / "a.png")  # writing out/a.png would change in/a.png
    with pytest.raises(ConfigError, match="would overwrite the input .*a.png"):
        predict.predict(str(tmp_path / "no_workdir"), str(picture_folder), str(out))


def test_predict_accepts_a_separate_output_folder(tmp_path, picture_folder):
    # Past the output check, the missing workdir is what stops it.
    with pytest.raises(FileNotFoundError, match="no_workdir"):
        predict.predict(str(tmp_path / "no_workdir"), str(picture_folder), str(tmp_path / "out"))
    with pytest.raises(FileNotFoundError, match="no_workdir"):  # next to a single input: fine
        predict.predict(str(tmp_path / "no_workdir"), str(picture_folder / "b.jpg"), str(tmp_path))


# --- class 3: weights files (.pth) -------------------------------------------------------------

READ_PTH = "from pix2pix_jax import torch_weights"
LOAD_PTH = "torch_weights.load_state_dict(sys.argv[1])"
FLOAT = np.float32(1.5).tobytes()


def write(path, data):
    path.write_bytes(data)
    return path


def test_hand_written_state_dicts_load_and_tied_weights_are_built_once(tmp_path):
    values = np.arange(6, dtype=np.float32)
    tensors = {
        "w": ("0", 6, 0, (2, 3), (3, 1)), "tied": ("0", 6, 0, (2, 3), (3, 1)),
        "wt": ("1", 6, 0, (3, 2), (1, 3)), "slice": ("2", 4, 1, (3,), (1,)),
    }  # fmt: skip
    storages = {k: hostile.stored(values[: 4 if k == "2" else 6].tobytes()) for k in "012"}
    got = torch_weights.load_state_dict(write(tmp_path / "ok.pth", hostile.pth(tensors, storages)))
    np.testing.assert_array_equal(got["w"], values.reshape(2, 3))
    np.testing.assert_array_equal(got["wt"], values.reshape(2, 3).T)
    np.testing.assert_array_equal(got["slice"], values[1:4])
    assert got["tied"] is got["w"]


@pytest.mark.parametrize(
    "size, stride, storage",
    [((2**27,), (0,), 1), ((4096, 4096), (1, 1), 8191), ((2, 2**20), (0, 1), 2**20)],
)
def test_views_with_more_elements_than_their_storage_are_refused(tmp_path, size, stride, storage):
    tensors = {"w": ("0", storage, 0, size, stride)}
    path = write(
        tmp_path / "x.pth", hostile.pth(tensors, {"0": hostile.stored(bytes(4 * storage))})
    )
    with pytest.raises(DataError, match=f"{path}: tensor 'w' of size .* expanded views"):
        torch_weights.load_state_dict(str(path))


def test_an_empty_tensor_with_an_absurd_size_is_refused(tmp_path):
    tensors = {"w": ("0", 1, 0, (0, 2**62), (1, 1))}
    path = write(tmp_path / "x.pth", hostile.pth(tensors, {"0": hostile.stored(FLOAT)}))
    with pytest.raises(DataError, match=f"{path}: tensor 'w' has an invalid offset, size"):
        torch_weights.load_state_dict(str(path))


def test_expanded_view_stays_in_bounded_memory(tmp_path):
    # One float, expanded by a stride of 0 to 2**27: before the fix the reader built it,
    # 512 MiB (peak +513 MB); now it is refused (+0 MB).
    tensors = {"w": ("0", 1, 0, (2**27,), (0,))}
    path = write(tmp_path / "expanded.pth", hostile.pth(tensors, {"0": hostile.stored(FLOAT)}))
    report = child(READ_PTH, LOAD_PTH, path)
    assert f"DataError: {path}: tensor 'w'" in report["error"]
    assert report["extra_mb"] < 32


def test_member_inflating_beyond_its_declared_size_is_refused_unread(tmp_path):
    # The storage declares 4 bytes but inflates to 512 MiB: zipfile asked zlib for up to
    # 1 GiB at once (peak +513 MB before the fix); now the sizes are compared first (+0 MB).
    bomb = hostile.deflate_zeros(b"", 2**29)
    member = (hostile.DEFLATED, bomb, 4, zlib.crc32(bytes(4)))
    path = write(tmp_path / "bomb.pth", hostile.pth({"w": ("0", 1, 0, (1,), (1,))}, {"0": member}))
    report = child(READ_PTH, LOAD_PTH, path)
    assert f"{path}: member archive/data/0 is compressed to" in report["error"]
    assert report["extra_mb"] < 32


def test_storage_declaring_more_than_the_file_can_hold_is_refused_unread(tmp_path):
    # 512 MiB of zeros, declared and real, deflated to 0.5 MB: read and then copied into
    # its tensor before the fix (peak +1025 MB); now refused from the header (+0 MB).
    n = 2**27
    member = (
        hostile.DEFLATED,
        hostile.deflate_zeros(b"", 4 * n),
        4 * n,
        hostile.crc32_zeros(b"", 4 * n),
    )
    path = write(tmp_path / "big.pth", hostile.pth({"w": ("0", n, 0, (n,), (1,))}, {"0": member}))
    report = child(READ_PTH, LOAD_PTH, path)
    assert f"{path}: storage 0 declares 536,870,912 bytes, more than a file of" in report["error"]
    assert report["extra_mb"] < 32


def test_bzip2_and_lzma_members_are_refused_unread(tmp_path):
    # zipfile hands them to decompressors without an output limit: 40 bytes of bzip2 are
    # 45 MB of zeros. torch.save never compresses.
    bomb = bz2.compress(bytes(2**20))
    member = (12, bomb, 4, zlib.crc32(bytes(4)))  # method 12: bzip2
    path = write(tmp_path / "bz2.pth", hostile.pth({"w": ("0", 1, 0, (1,), (1,))}, {"0": member}))
    with pytest.raises(
        DataError, match=f"{path}: member archive/data/0 uses compression method 12"
    ):
        torch_weights.load_state_dict(str(path))


def test_pickle_declaring_too_much_is_refused(tmp_path):
    pickled = hostile.deflate_zeros(b"", 2**27)  # 128 MiB of zeros as data.pkl
    member = ("archive/data.pkl", hostile.DEFLATED, pickled, 2**27, hostile.crc32_zeros(b"", 2**27))
    path = write(tmp_path / "pickle.pth", hostile.raw_zip([member]))
    with pytest.raises(DataError, match=f"{path}: member archive/data.pkl declares 134,217,728"):
        torch_weights.load_state_dict(str(path))


# --- class 3: images ---------------------------------------------------------------------------

DECODE = "from pix2pix_jax.datasets import images"


def test_image_with_too_many_pixels_is_refused_before_decoding(tmp_path):
    # 12000x12000 RGB: 0.4 MB on disk, 432 MB decoded (Pillow only warns below 179 M pixels);
    # before the fix peak +433 MB, now refused from the header (+0 MB).
    path = write(tmp_path / "huge.png", hostile.png_zeros(12000, 12000))
    action = "images.decode(open(sys.argv[1], 'rb').read(), sys.argv[1])"
    report = child(DECODE, action, path)
    assert f"{path}: image is 12000x12000 = 144,000,000 pixels, more than" in report["error"]
    assert report["extra_mb"] < 32


def test_decoding_threads_share_one_pixel_budget(tmp_path):
    # 8 threads (dataset.num_threads' default) each decode a 5000x5000 RGB PNG (75 MB):
    # before the fix all at once (peak +720 MB); now at most max_image_pixels (2**25) pixels
    # are decoded at a time, so one image after the other, and each image's memory goes back
    # to the system when it is freed rather than to its thread's malloc arena (+97 MB).
    path = write(tmp_path / "big.png", hostile.png_zeros(5000, 5000))
    action = """
    import concurrent.futures
    data = open(sys.argv[1], "rb").read()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(lambda i: images.decode(data, sys.argv[1]).size, range(8)))
    out["sizes"] = sizes
    """
    report = child(DECODE, action, path)
    assert report.get("sizes") == [[5000, 5000]] * 8, report
    assert report["extra_mb"] < 75 * 1.6


def test_the_pixel_budget_lets_threads_through_one_by_one_without_deadlock():
    data = [hostile.png_zeros(60, 50 + i) for i in range(16)]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sizes = list(pool.map(lambda d: images.decode(d, "x", max_pixels=3900).size, data))
    assert sizes == [(60, 50 + i) for i in range(16)]


def test_max_image_pixels_is_a_checked_config_field_that_reaches_the_decoder(tmp_path):
    config = make_tiny_config(str(tmp_path / "tfds"))
    assert config.dataset.max_image_pixels == images.MAX_PIXELS == 2**25
    for bad in (0, 3, -5):  # ConfigDict itself refuses non-integers
        config.dataset.max_image_pixels = bad
        with pytest.raises(ConfigError, match="dataset.max_image_pixels"):
            config_lib.validate(config)
    config.dataset.max_image_pixels = 8 * 8 * 2 - 1  # one pixel short of the 8x16 A|B image
    buf = io.BytesIO()
    Image.new("RGB", (16, 8)).save(buf, "PNG")
    record = {"image": buf.getvalue(), "file_name": b"train/0.png"}
    with pytest.raises(DataError, match="train/0.png .*16x8 = 128 pixels, more than"):
        input_pipeline.pair(record, input_pipeline.Recipe.from_config(config))


# --- class 3 and 6: dataset folders and archives -----------------------------------------------

PREPARE = "from pix2pix_jax.datasets import folder"
PREPARE_BOTH = """
for skip in (False, True):
    try:
        builder = folder.make_builder(sys.argv[1], sys.argv[2] + str(skip), skip)
        builder.download_and_prepare(file_format="array_record")
        out[str(skip)] = len(builder.as_data_source()["train"])
    except Exception as e:
        out[str(skip)] = f"{type(e).__name__}: {e}"
"""


@pytest.mark.parametrize("kind", ["device", "named pipe"])
def test_special_files_in_a_folder_stop_before_reading_or_are_skipped(tmp_path, kind):
    # Before the fix: a link to /dev/zero named like an image was read until memory ran out
    # (the child's 1.5 GiB guard: +1537 MB, MemoryError), a named pipe hung the prepare.
    root = tmp_path / "data"
    side_by_side(root, splits=("train",))
    bad = root / "train" / "bad.png"
    if kind == "device":
        os.symlink("/dev/zero", bad)
    else:
        os.mkfifo(bad)
    report = child(PREPARE, PREPARE_BOTH, root, tmp_path / "tfds", timeout=60)
    what = "a character device" if kind == "device" else "a named pipe (FIFO)"
    assert (
        report["False"] == f"DataError: {bad}: is {what}, not a regular file; images must be files"
    )
    assert not (tmp_path / "tfdsFalse").exists()  # stopped before anything was written
    assert report["True"] == 3  # skipped, and named
    assert f"Skipped 1 bad files in {root}:\n  {bad}: is {what}" in report["stdout"]
    assert report["extra_mb"] < 200  # tfds' preparation itself; no file is read whole


def test_archive_member_larger_than_any_image_is_refused_unread(tmp_path):
    # An official-layout archive whose member declares 300 MiB (zeros, 0.3 MB of gzip), more
    # than an image of max_image_pixels can take: read whole before the fix (peak +300 MB);
    # now refused from its header.
    files = {f"facades/{s}/{i}.jpg": jpeg_ab() for s in ("train", "val", "test") for i in (0, 1)}
    archive = write(
        tmp_path / "facades.tar.gz",
        hostile.tar_gz_with_zeros(files, "facades/train/big.jpg", 300 * 2**20),
    )
    action = """
    builder = tfds.builder("pix2pix/facades", data_dir=sys.argv[2], path=sys.argv[1])
    builder.download_and_prepare(file_format="array_record")
    """
    report = child(PREPARE_ARCHIVE, action, archive, tmp_path / "tfds")
    assert f"{archive}:facades/train/big.jpg: 314,572,800 bytes, more than" in report["error"]
    assert report["extra_mb"] < 200  # tfds' preparation itself; the member is never read


def test_archive_member_larger_than_any_image_is_skipped_when_asked(tmp_path, capsys):
    files = {f"facades/{s}/{i}.jpg": jpeg_ab() for s in ("train", "val", "test") for i in (0, 1)}
    archive = tmp_path / "facades.tar.gz"
    archive.write_bytes(hostile.tar_gz_with_zeros(files, "facades/train/big.jpg", 2 * 2**20))
    builder = pix2pix.Pix2pix(
        config="facades", data_dir=str(tmp_path / "tfds"), path=str(archive),
        skip_bad_files=True, max_pixels=2**10,  # files up to 1 MiB + 8 kiB
    )  # fmt: skip
    builder.download_and_prepare(file_format="array_record")
    assert len(builder.as_data_source()["train"]) == 2
    out = capsys.readouterr().out
    assert f"{archive}:facades/train/big.jpg: 2,097,152 bytes, more than the 1,056,768" in out


PREPARE_ARCHIVE = "import tensorflow_datasets as tfds, pix2pix_jax.datasets"


def jpeg_ab():
    buf = io.BytesIO()
    Image.new("RGB", (16, 8), (100, 50, 0)).save(buf, "JPEG")
    return buf.getvalue()


@pytest.mark.parametrize("case", ["dangling link", "name not UTF-8"])
def test_odd_names_stop_before_anything_is_written_or_are_skipped(tmp_path, case, capsys):
    root = tmp_path / "data"
    side_by_side(root, splits=("train",))
    if case == "dangling link":
        os.symlink(root / "train" / "gone.png", root / "train" / "bad.png")
        shown = f"{root}/train/bad.png: a dangling symbolic link"
    else:
        bad = os.path.join(os.fsencode(root / "train"), b"bad\xff.png")
        with open(bad, "wb") as f:
            f.write(hostile.png_zeros(16, 8))
        shown = f"{root}/train/bad\\xff.png: the file name is not valid UTF-8"
    with pytest.raises(DataError) as error:
        records(root, tmp_path / "tfds")
    assert str(error.value).startswith(shown) and "\n" not in str(error.value)
    assert not (tmp_path / "tfds").exists()
    read, _ = records(root, tmp_path / "tfds_skip", skip=True)
    assert len(read) == 3
    assert f"Skipped 1 bad files in {root}:\n  {shown}" in capsys.readouterr().out


def test_a_folder_file_larger_than_any_image_is_refused_unread(tmp_path):
    # 9 bytes for each pixel allowed (an image takes at most 8): read whole before the fix
    # (peak +288 MB, then "not an image"); now refused from its size, or skipped when asked.
    root = tmp_path / "data"
    side_by_side(root, splits=("train",))
    big = root / "train" / "big.bmp"
    with open(big, "wb") as f:  # sparse: takes no disk
        f.truncate(9 * images.MAX_PIXELS)
    report = child(PREPARE, PREPARE_BOTH, root, tmp_path / "tfds")
    assert report["False"].startswith(f"DataError: {big}: 301,989,888 bytes, more than the")
    assert not (tmp_path / "tfdsFalse").exists()
    assert report["True"] == 3
    assert report["extra_mb"] < 200
