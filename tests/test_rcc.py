"""models.rcc reads the files of a compiled Qt resource bundle (how gcompris-qt-data ships its photos)."""

from __future__ import annotations

import struct
import zlib

import pytest

from models.rcc import read_rcc


def rcc_bytes(version: int = 2) -> bytes:
    """A bundle laid out as Qt's rcc writes it: / -> images/ -> {a.bin (stored), b.bin (qCompress)},
    top.txt."""
    names = b""
    name_at = {}
    for n in ("images", "a.bin", "b.bin", "top.txt"):
        name_at[n] = len(names)
        names += struct.pack(">HI", len(n), 0) + n.encode("utf-16-be")
    payload_b = b"compressible " * 40
    blobs = [b"\x00\x01stored", struct.pack(">I", len(payload_b)) + zlib.compress(payload_b), b"top level"]
    data, data_at = b"", []
    for blob in blobs:
        data_at.append(len(data))
        data += struct.pack(">I", len(blob)) + blob
    tail = b"\x00" * 8 if version >= 2 else b""

    def directory(name_offset, count, first):
        return struct.pack(">IHII", name_offset, 2, count, first) + tail

    def file(name_offset, flags, offset):
        return struct.pack(">IHHHI", name_offset, flags, 0, 0, offset) + tail

    tree = (
        directory(0, 2, 1)
        + directory(name_at["images"], 2, 3)
        + file(name_at["top.txt"], 0, data_at[2])
        + file(name_at["a.bin"], 0, data_at[0])
        + file(name_at["b.bin"], 1, data_at[1])
    )
    header = 20 + (4 if version >= 3 else 0)
    tree_off, data_off = header, header + len(tree)
    names_off = data_off + len(data)
    head = b"qres" + struct.pack(">4I", version, tree_off, data_off, names_off)
    if version >= 3:
        head += struct.pack(">I", 0)
    return head + tree + data + names


@pytest.mark.parametrize("version", [1, 2, 3])
def test_read_rcc_returns_every_file_with_its_path_and_bytes(tmp_path, version):
    path = tmp_path / "bundle.rcc"
    path.write_bytes(rcc_bytes(version))
    files = read_rcc(path)
    assert files == {
        "images/a.bin": b"\x00\x01stored",
        "images/b.bin": b"compressible " * 40,
        "top.txt": b"top level",
    }


def test_read_rcc_rejects_a_file_that_is_not_a_bundle(tmp_path):
    path = tmp_path / "photo.webp"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WEBP")
    with pytest.raises(ValueError, match="not a Qt resource bundle"):
        read_rcc(path)
