"""The .caffemodel reader on files written here in Caffe's real wire format, and hostile ones.

The files are serialized by protobuf's own runtime from message types declared
here with caffe.proto's field numbers (BVLC/caffe src/caffe/proto/caffe.proto),
so the reader is checked against an independent encoder, not against itself.
"""

import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

from pix2pix_jax import caffemodel
from pix2pix_jax.errors import DataError, MissingFileError

F = descriptor_pb2.FieldDescriptorProto


def _message(file, name, *fields):
    message = file.message_type.add(name=name)
    for field_name, number, kind, repeated, extra in fields:
        field = message.field.add(name=field_name, number=number, type=kind)
        field.label = F.LABEL_REPEATED if repeated else F.LABEL_OPTIONAL
        if extra == "packed":
            field.options.packed = True
        elif extra:
            field.type_name = f".caffe.{extra}"


def _caffe_classes():
    """A subset of caffe.proto (field numbers as there), with the fields the reader skips."""
    file = descriptor_pb2.FileDescriptorProto(name="caffe_subset.proto", package="caffe")
    _message(file, "BlobShape", ("dim", 1, F.TYPE_INT64, True, "packed"))
    blob_fields = [
        ("num", 1, F.TYPE_INT32, False, None), ("channels", 2, F.TYPE_INT32, False, None),
        ("height", 3, F.TYPE_INT32, False, None), ("width", 4, F.TYPE_INT32, False, None),
        ("shape", 7, F.TYPE_MESSAGE, False, "BlobShape"),
    ]  # fmt: skip
    packed = [("data", 5, F.TYPE_FLOAT, True, "packed"), ("diff", 6, F.TYPE_FLOAT, True, "packed")]
    packed.append(("double_data", 8, F.TYPE_DOUBLE, True, "packed"))
    _message(file, "BlobProto", *blob_fields, *packed)
    # The same message with unpacked repeated numbers (one field per value): readers must take both.
    unpacked = [(n, i, t, True, None) for n, i, t, _, _ in packed]
    _message(file, "BlobProtoUnpacked", *blob_fields, *unpacked)
    _message(
        file, "ConvolutionParameter",
        ("num_output", 1, F.TYPE_UINT32, False, None),
        ("kernel_size", 4, F.TYPE_UINT32, True, None),
    )  # fmt: skip
    _message(
        file, "LayerParameter",
        ("name", 1, F.TYPE_STRING, False, None), ("type", 2, F.TYPE_STRING, False, None),
        ("bottom", 3, F.TYPE_STRING, True, None), ("top", 4, F.TYPE_STRING, True, None),
        ("loss_weight", 5, F.TYPE_FLOAT, True, None),
        ("blobs", 7, F.TYPE_MESSAGE, True, "BlobProto"),
        ("convolution_param", 106, F.TYPE_MESSAGE, False, "ConvolutionParameter"),
    )  # fmt: skip
    _message(
        file, "V1LayerParameter",
        ("bottom", 2, F.TYPE_STRING, True, None), ("top", 3, F.TYPE_STRING, True, None),
        ("name", 4, F.TYPE_STRING, False, None), ("type", 5, F.TYPE_INT32, False, None),
        ("blobs", 6, F.TYPE_MESSAGE, True, "BlobProtoUnpacked"),
        ("blobs_lr", 7, F.TYPE_FLOAT, True, None),
        ("convolution_param", 10, F.TYPE_MESSAGE, False, "ConvolutionParameter"),
    )  # fmt: skip
    _message(
        file, "NetParameter",
        ("name", 1, F.TYPE_STRING, False, None),
        ("layers", 2, F.TYPE_MESSAGE, True, "V1LayerParameter"),
        ("input", 3, F.TYPE_STRING, True, None), ("input_dim", 4, F.TYPE_INT32, True, None),
        ("layer", 100, F.TYPE_MESSAGE, True, "LayerParameter"),
    )  # fmt: skip
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}"))
        for name in ("NetParameter", "BlobProto")
    }


CAFFE = _caffe_classes()
V1_TYPES = {"Convolution": 4, "Deconvolution": 39, "ReLU": 18}


def _fill_blob(blob, array: np.ndarray, legacy_dims: bool, double: bool) -> None:
    if legacy_dims:  # num, channels, height, width: shapes of up to 4 axes, 1s in front
        dims = (1,) * (4 - array.ndim) + array.shape
        blob.num, blob.channels, blob.height, blob.width = dims
    else:
        blob.shape.dim.extend(array.shape)
    (blob.double_data if double else blob.data).extend(array.reshape(-1).tolist())


def caffemodel_bytes(
    layers: list[tuple[str, str, list[np.ndarray]]], legacy: bool = False, double: bool = False
) -> bytes:
    """A serialized NetParameter: `layers` (name, type, blobs) in the current `layer` field or,
    `legacy`, in the V1 `layers` field (enum types, 4-D legacy shapes, unpacked floats)."""
    net = CAFFE["NetParameter"](name="test-net", input=["data"], input_dim=[1, 3, 8, 8])
    for name, kind, blobs in layers:
        layer = net.layers.add() if legacy else net.layer.add()
        layer.name, layer.bottom[:], layer.top[:] = name, ["x"], [name]
        layer.type = V1_TYPES[kind] if legacy else kind
        if blobs:
            layer.convolution_param.num_output = blobs[0].shape[0]
            layer.convolution_param.kernel_size.append(3)
        for array in blobs:
            _fill_blob(layer.blobs.add(), array, legacy_dims=legacy, double=double)
        if legacy:
            layer.blobs_lr.extend([1.0, 2.0])
    return net.SerializeToString()


def write(path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def sample_layers(seed=0):
    rng = np.random.default_rng(seed)
    return [
        ("conv1", "Convolution", [rng.normal(size=(4, 3, 3, 3)), rng.normal(size=(4,))]),
        ("relu1", "ReLU", []),
        ("up", "Deconvolution", [rng.normal(size=(4, 4, 4, 4))]),
    ]


@pytest.mark.parametrize("legacy", [False, True], ids=["layer", "legacy-layers"])
def test_reads_names_types_and_weights_of_both_layer_fields(tmp_path, legacy):
    layers = sample_layers()
    path = write(tmp_path / "net.caffemodel", caffemodel_bytes(layers, legacy=legacy))
    read = caffemodel.read_layers(path)
    assert list(read) == ["conv1", "up"]  # layers without weights are left out
    for name, kind, blobs in layers:
        if not blobs:
            continue
        assert read[name].type == kind
        assert len(read[name].blobs) == len(blobs)
        for blob, expected in zip(read[name].blobs, blobs, strict=True):
            assert blob.legacy_shape == legacy
            assert blob.fits(expected.shape)
            assert not blob.fits(expected.shape[1:] + (1,))
            got = blob.data.reshape(expected.shape)
            np.testing.assert_array_equal(got, expected.astype(np.float32))
    assert read["conv1"].blobs[1].data.shape == ((1, 1, 1, 4) if legacy else (4,))


def test_reads_double_data(tmp_path):
    layers = sample_layers(1)
    path = write(tmp_path / "double.caffemodel", caffemodel_bytes(layers, double=True))
    blob = caffemodel.read_layers(path)["conv1"].blobs[0]
    assert blob.data.dtype == np.float32
    np.testing.assert_array_equal(blob.data, layers[0][2][0].astype(np.float32))


def test_every_truncation_fails_or_reads_a_prefix_exactly(tmp_path):
    data = caffemodel_bytes(sample_layers())
    full = caffemodel.parse_net(data)
    failures = 0
    for cut in range(1, len(data)):
        try:
            layers = caffemodel.parse_net(data[:cut])
        except (DataError, caffemodel._Truncated):  # read_layers reports both as DataError
            failures += 1
            continue
        # A cut between two layers is a shorter, valid message: whole layers only.
        assert len(layers) < len(full)
        for got, expected in zip(layers, full, strict=False):
            assert got.name == expected.name
            for a, b in zip(got.blobs, expected.blobs, strict=True):
                np.testing.assert_array_equal(a.data, b.data)
    assert failures > len(data) * 0.9
    path = write(tmp_path / "cut.caffemodel", data[:-3])
    with pytest.raises(DataError, match="cut.caffemodel: truncated"):
        caffemodel.read_layers(path)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _layer_with_blob(blob: bytes, name=b"conv1") -> bytes:
    return _field(100, _field(1, name) + _field(7, blob))


HOSTILE = {
    "huge length": _varint(100 << 3 | 2) + _varint(2**62) + b"\x00" * 8,
    "endless varint": _varint(1 << 3) + b"\xff" * 11,
    "group wire type": _varint(100 << 3 | 3) + b"\x00" * 8,
    "field 0": b"\x00\x00",
    # A shape of 10^12 values with 2 floats of data: refused before anything is allocated.
    "shape without data": _layer_with_blob(
        _field(7, _field(1, _varint(10**6) + _varint(10**6))) + _field(5, b"\x00" * 8)
    ),
    "negative dimension": _layer_with_blob(
        _field(7, _field(1, _varint(2**64 - 1))) + _field(5, b"\x00" * 4)
    ),
    "too many axes": _layer_with_blob(_field(7, _field(1, _varint(1) * 40)) + _field(5, b"\0" * 4)),
    "ragged packed floats": _layer_with_blob(
        _field(7, _field(1, _varint(1))) + _field(5, b"\0" * 5)
    ),
    "V0 layer": _field(2, _field(1, _field(1, b"conv1"))),
    "two conv1": _layer_with_blob(_field(7, _field(1, _varint(1))) + _field(5, b"\0" * 4)) * 2,
    "empty": b"",
    "a zip file": b"PK\x03\x04" + bytes(range(200)),
}
HOSTILE_MESSAGES = {
    "huge length": "truncated",
    "endless varint": "longer than 10 bytes",
    "group wire type": "wire type 3",
    "field 0": "field number 0",
    "shape without data": r"shape \(1000000, 1000000\) holds 2 values",
    "negative dimension": "cannot hold",
    "too many axes": "cannot hold",
    "ragged packed floats": "packed <f4 array of 5 bytes",
    "V0 layer": "V0-format",
    "two conv1": "two layers named 'conv1'",
    "empty": "no layer with weights",
    "a zip file": "not a readable .caffemodel",
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_files_are_refused_with_a_reason(tmp_path, name):
    path = write(tmp_path / "hostile.caffemodel", HOSTILE[name])
    with pytest.raises(DataError, match=HOSTILE_MESSAGES[name]) as info:
        caffemodel.read_layers(path)
    assert "hostile.caffemodel" in str(info.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(MissingFileError, match="nothing.caffemodel"):
        caffemodel.read_layers(str(tmp_path / "nothing.caffemodel"))
