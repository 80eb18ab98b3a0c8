"""Hostile files for the untrusted-input tests, built without allocating what they declare.

Zeros compress a thousandfold, so a few hundred kB of deflate can declare or inflate to
hundreds of MB. `deflate_zeros` writes such a stream without ever holding the zeros: after a
full flush deflate restarts from a clean state, so every MiB of zeros compresses to the same
bytes, computed once and repeated.
"""

import io
import struct
import tarfile
import zlib

MIB = 2**20
STORED, DEFLATED = 0, 8  # zip compression methods


def deflate_zeros(prefix: bytes, zeros: int, wbits: int = -15) -> bytes:
    """A deflate stream (raw by default) of `prefix` followed by `zeros` zero bytes."""
    c = zlib.compressobj(9, zlib.DEFLATED, wbits)
    parts = [c.compress(prefix), c.flush(zlib.Z_FULL_FLUSH)]
    full, rest = divmod(zeros, MIB)
    if full:
        parts += [c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH)] * full
    parts += [c.compress(bytes(rest)), c.flush()]
    return b"".join(parts)


def crc32_zeros(prefix: bytes, zeros: int) -> int:
    """CRC-32 of `prefix` followed by `zeros` zero bytes."""
    crc, block = zlib.crc32(prefix), bytes(MIB)
    full, rest = divmod(zeros, MIB)
    for _ in range(full):
        crc = zlib.crc32(block, crc)
    return zlib.crc32(bytes(rest), crc)


# --- PyTorch state_dict files (torch.save's zip format), written opcode by opcode -----------


def _text(s: str) -> bytes:
    data = s.encode()
    return b"X" + struct.pack("<I", len(data)) + data  # BINUNICODE


def _int(n: int) -> bytes:
    if -(2**31) <= n < 2**31:
        return b"J" + struct.pack("<i", n)  # BININT
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data  # LONG1


def _tuple(values) -> bytes:
    return b"(" + b"".join(map(_int, values)) + b"t"  # MARK ... TUPLE


def state_dict_pickle(tensors: dict) -> bytes:
    """data.pkl of a state_dict: name -> (storage key, numel, offset, size, stride), float32.

    The opcodes pickle writes for torch.save (protocol 2): an OrderedDict-free plain dict of
    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    """
    out = [b"\x80\x02}("]  # PROTO 2, EMPTY_DICT, MARK
    for name, (key, numel, offset, size, stride) in tensors.items():
        storage = b"(" + _text("storage") + b"ctorch\nFloatStorage\n" + _text(key)
        storage += _text("cpu") + _int(numel) + b"tQ"  # persistent id -> BINPERSID
        out += [_text(name), b"ctorch._utils\n_rebuild_tensor_v2\n(", storage, _int(offset)]
        out += [_tuple(size), _tuple(stride), b"\x89ccollections\nOrderedDict\n)RtR"]
    out.append(b"u.")  # SETITEMS, STOP
    return b"".join(out)


def raw_zip(members: list[tuple[str, int, bytes, int, int]]) -> bytes:
    """A zip of (name, method, stored bytes, declared size, crc): headers say what we say."""
    body, central = io.BytesIO(), []
    for name, method, data, size, crc in members:
        offset, encoded = body.tell(), name.encode()
        fields = (20, 0, method, 0, 0, crc, len(data), size, len(encoded))
        body.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, *fields, 0) + encoded + data)
        central.append(
            struct.pack("<IH", 0x02014B50, 20)
            + struct.pack("<HHHHHIIIHHHHHII", *fields, 0, 0, 0, 0, 0, offset)
            + encoded
        )
    directory = b"".join(central)
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(central), len(central), len(directory),
                      body.tell(), 0)  # fmt: skip
    return body.getvalue() + directory + end


def pth(tensors: dict, storages: dict[str, tuple[int, bytes, int, int]]) -> bytes:
    """A torch.save zip file; storages: key -> (method, stored bytes, declared size, crc)."""
    pickled = state_dict_pickle(tensors)
    members = [("archive/data.pkl", STORED, pickled, len(pickled), zlib.crc32(pickled))]
    members += [(f"archive/data/{k}", *v) for k, v in storages.items()]
    members.append(("archive/version", STORED, b"3\n", 2, zlib.crc32(b"3\n")))
    return raw_zip(members)


def stored(data: bytes) -> tuple[int, bytes, int, int]:
    """A storage member holding `data` uncompressed, as torch.save writes it."""
    return STORED, data, len(data), zlib.crc32(data)


# --- images and archives -------------------------------------------------------------------


def png_zeros(width: int, height: int) -> bytes:
    """A black RGB PNG of width x height: a few hundred kB for hundreds of MB of pixels."""
    raw = (1 + 3 * width) * height  # each row: filter byte 0, then the pixels
    adler = ((raw % 65521) << 16) | 1  # Adler-32 of zeros: a = 1, b = n
    idat = b"\x78\xda" + deflate_zeros(b"", raw) + struct.pack(">I", adler)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def tar_gz_with_zeros(files: dict[str, bytes], big: str, size: int) -> bytes:
    """A .tar.gz of `files`, then the member `big`: `size` zero bytes (a multiple of 512)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    head = buf.getvalue()
    head = head[: len(head) - len(head) % 512]
    while head.endswith(bytes(512)):  # drop the end-of-archive blocks; the zeros end it anew
        head = head[:-512]
    info = tarfile.TarInfo(big)
    info.size = size
    prefix = head + info.tobuf(tarfile.USTAR_FORMAT)
    zeros = size + 2 * 512
    total = len(prefix) + zeros
    gzip_header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc32_zeros(prefix, zeros), total % 2**32)
    return gzip_header + deflate_zeros(prefix, zeros) + trailer
