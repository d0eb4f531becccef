"""Read the files inside a compiled Qt resource bundle (``.rcc``), the format Debian's
``gcompris-qt-data`` ships its pictures in.

Layout (Qt's ``rcc`` binary format, versions 1-3), all integers big-endian:

* header: ``b"qres"``, version (u32), tree offset, data offset, names offset (u32 each), and from
  version 3 a flags word (u32);
* tree: fixed-size nodes (14 bytes; 22 from version 2, which appends a u64 modification time), node 0
  the root. A node is ``name offset (u32), flags (u16)``, then for a directory ``child count (u32),
  first child node (u32)``, for a file ``territory (u16), language (u16), data offset (u32)``;
* names: ``length (u16), hash (u32), UTF-16BE characters``;
* data: ``size (u32)`` then the bytes; flag 1 marks a ``qCompress`` blob (u32 uncompressed size, then a
  zlib stream), flag 4 zstd (not read: no such file in the bundles we use).
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

_DIRECTORY, _ZLIB, _ZSTD = 2, 1, 4


def read_rcc(path: Path) -> dict[str, bytes]:
    """Every file of the bundle as ``{"dir/sub/name.ext": bytes}`` (no leading slash)."""
    b = Path(path).read_bytes()
    if b[:4] != b"qres":
        raise ValueError(f"{path}: not a Qt resource bundle (no 'qres' magic)")
    version, tree, data, names = struct.unpack_from(">4I", b, 4)
    if version not in (1, 2, 3):
        raise ValueError(f"{path}: unsupported rcc version {version}")
    node_size = 14 if version == 1 else 22

    def name(offset: int) -> str:
        (n,) = struct.unpack_from(">H", b, names + offset)
        return b[names + offset + 6 : names + offset + 6 + 2 * n].decode("utf-16-be")

    files: dict[str, bytes] = {}

    def walk(node: int, prefix: str) -> None:
        base = tree + node * node_size
        name_offset, flags = struct.unpack_from(">IH", b, base)
        if flags & _DIRECTORY:
            count, first = struct.unpack_from(">II", b, base + 6)
            here = prefix if node == 0 else prefix + name(name_offset) + "/"
            for child in range(first, first + count):
                walk(child, here)
            return
        (offset,) = struct.unpack_from(">I", b, base + 10)
        (size,) = struct.unpack_from(">I", b, data + offset)
        blob = b[data + offset + 4 : data + offset + 4 + size]
        if flags & _ZSTD:
            raise ValueError(f"{path}: {prefix + name(name_offset)} is zstd-compressed (not supported)")
        if flags & _ZLIB:
            blob = zlib.decompress(blob[4:])
        files[prefix + name(name_offset)] = blob

    walk(0, "")
    return files
