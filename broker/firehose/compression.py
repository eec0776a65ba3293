"""The compression formats of S3 destinations: UNCOMPRESSED, GZIP, ZIP, Snappy, HADOOP_SNAPPY,
and ZSTD (a Kinesis channel's; a standard Zstandard frame, what `zstd -d` reads).

The one module importing cramjam (Snappy and Zstandard in C). GZIP and ZIP come from the
standard library.
Snappy is the framing format (what `snappy -c`, python-snappy's stream compressor and Hadoop's
SnappyCodec readers of ".snappy" framed files read); HADOOP_SNAPPY is Hadoop's block format
(each block: the uncompressed length, then one or more chunks of compressed length + raw
Snappy data, lengths as 4-byte big-endian), which Hadoop's `SnappyCodec` reads.
"""

from __future__ import annotations

import gzip
import io
import struct
import zipfile

import cramjam

FORMATS = ("UNCOMPRESSED", "GZIP", "ZIP", "Snappy", "HADOOP_SNAPPY", "ZSTD")
_HADOOP_BLOCK_BYTES = 256 * 1024  # Hadoop's io.compression.codec.snappy.buffersize default


def compress(data: bytes, compression_format: str, *, entry_name: str = "data") -> bytes:
    """`data` in `compression_format`; `entry_name` names the one entry of a ZIP archive."""
    if compression_format == "UNCOMPRESSED":
        return data
    if compression_format == "GZIP":
        return gzip.compress(data, compresslevel=6, mtime=0)
    if compression_format == "ZIP":
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(entry_name, data)
        return out.getvalue()
    if compression_format == "Snappy":
        return bytes(cramjam.snappy.compress(data))
    if compression_format == "HADOOP_SNAPPY":
        return _hadoop_snappy(data)
    if compression_format == "ZSTD":
        return bytes(cramjam.zstd.compress(data))
    raise AssertionError(f"unknown compression format {compression_format!r}")


def decompress(data: bytes, compression_format: str) -> bytes:
    """The inverse of `compress` (tests and tools read objects back with it)."""
    if compression_format == "UNCOMPRESSED":
        return data
    if compression_format == "GZIP":
        return gzip.decompress(data)
    if compression_format == "ZIP":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return b"".join(archive.read(name) for name in archive.namelist())
    if compression_format == "Snappy":
        return bytes(cramjam.snappy.decompress(data))
    if compression_format == "HADOOP_SNAPPY":
        return _hadoop_unsnappy(data)
    if compression_format == "ZSTD":
        return bytes(cramjam.zstd.decompress(data))
    raise AssertionError(f"unknown compression format {compression_format!r}")


def _hadoop_snappy(data: bytes) -> bytes:
    out = bytearray()
    for start in range(0, len(data), _HADOOP_BLOCK_BYTES):
        block = data[start : start + _HADOOP_BLOCK_BYTES]
        chunk = bytes(cramjam.snappy.compress_raw(block))
        out += struct.pack(">II", len(block), len(chunk)) + chunk
    return bytes(out)


def _hadoop_unsnappy(data: bytes) -> bytes:
    out = bytearray()
    position = 0
    while position < len(data):
        (block_length,) = struct.unpack_from(">I", data, position)
        position += 4
        produced = 0
        while produced < block_length:
            (chunk_length,) = struct.unpack_from(">I", data, position)
            position += 4
            chunk = bytes(cramjam.snappy.decompress_raw(data[position : position + chunk_length]))
            position += chunk_length
            out += chunk
            produced += len(chunk)
    return bytes(out)
