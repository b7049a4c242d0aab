"""The .cnnz file: a Deep-Compressed model, byte for byte (docs/FORMAT.md describes the layout).

Writing takes the quantized model in memory (its prunable weights as ``SharedWeights`` records,
everything else as dense tensors); reading rebuilds a dense ``nn.Module`` whose tensors are bit-for-
bit those of the model that was written, so its logits are equal, not merely close.

A .cnnz file may come from anywhere, so reading trusts nothing: the file CRC, then every record's
CRC, are checked before a byte is interpreted; every length is checked against the bytes that are
left; every shape against a per-tensor and a whole-file element cap; every Huffman table against the
Kraft inequality; every decoded position against the tensor's size; the model is first built on the
``meta`` device (no memory) and its tensor shapes compared with the file's before it is allocated.
Anything wrong raises ``ValueError`` naming the problem.
"""
from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from cnnzoo.inference import huffman
from cnnzoo.models.factory import create_model
from cnnzoo.utils.io import atomic_write

MAGIC = b"CNNZ"
VERSION = 1
MAX_ELEMENTS = 1 << 28          # per file: 268M weights (1 GiB in fp32), far above any zoo model
MAX_NDIM = 8
MAX_RECORDS = 1 << 16
MAX_META_BYTES = 1 << 20
MAX_FILE_BYTES = 1 << 31

ENC_FP32, ENC_FP16, ENC_INT64, ENC_SPARSE = 0, 1, 2, 3
ENCODING_NAMES = {ENC_FP32: "dense-fp32", ENC_FP16: "dense-fp16", ENC_INT64: "dense-int64",
                  ENC_SPARSE: "sparse-quantized-huffman"}
_DENSE_DTYPES = {ENC_FP32: (np.dtype("<f4"), torch.float32), ENC_FP16: (np.dtype("<f2"), torch.float16),
                 ENC_INT64: (np.dtype("<i8"), torch.int64)}
CODEBOOK_DTYPES = {0: (np.dtype("<f4"), torch.float32), 1: (np.dtype("<f2"), torch.float16)}
FP16_MAX = 65504.0


class SharedWeights(Protocol):
    """One layer's weights as Deep Compression shares them: ``weight.flatten()[positions] ==
    centroids[labels]``, zero elsewhere (``cnnzoo.compression.kmeans.QuantizedWeight`` is one)."""

    shape: tuple[int, ...]
    positions: torch.Tensor  # (n,) flat indices of the surviving weights, ascending
    labels: torch.Tensor     # (n,) cluster of each surviving weight
    centroids: torch.Tensor  # (k,) shared values
    bits: int


# --------------------------------------------------------------------------------------------------
# Encoding choices shared by the writer and the pipeline (so the model in memory matches the file)


def dense_encoding(t: torch.Tensor, dense_dtype: str) -> int:
    """fp16 for a float tensor when asked and it fits fp16's range, else fp32; int64 for integers."""
    if not t.is_floating_point():
        return ENC_INT64
    if dense_dtype not in ("fp16", "fp32"):
        raise ValueError(f"dense dtype must be fp16 or fp32, got {dense_dtype!r}")
    if dense_dtype == "fp32":
        return ENC_FP32
    if t.numel() == 0 or (bool(torch.isfinite(t).all()) and float(t.abs().max()) <= FP16_MAX):
        return ENC_FP16
    return ENC_FP32


def round_to_encoding(t: torch.Tensor, encoding: int) -> torch.Tensor:
    """The value ``t`` will have once written with ``encoding`` and read back (as t's dtype)."""
    if encoding == ENC_FP16:
        return t.to(torch.float16).to(t.dtype)
    return t


def round_codebook(centroids: torch.Tensor, codebook_dtype: int) -> torch.Tensor:
    return centroids.detach().to(CODEBOOK_DTYPES[codebook_dtype][1]).float()


# --------------------------------------------------------------------------------------------------
# Sparse weights: relative positions with filler entries, cluster indices, both Huffman coded


def entry_streams(positions: np.ndarray, labels: np.ndarray, gap_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(index symbols, gap symbols) of one layer, as in the paper's Fig. 2.

    The gap before a weight is the number of pruned positions since the previous one. A gap that
    does not fit ``gap_bits`` bits is bridged by filler entries: gap ``2**gap_bits - 1`` with index
    symbol 0, which stands for the value zero (real cluster ``c`` is symbol ``c + 1``).
    """
    span = 1 << gap_bits
    gaps = np.diff(positions, prepend=-1) - 1
    fillers = gaps // span
    real_at = np.cumsum(fillers + 1) - 1
    n_entries = int(real_at[-1]) + 1 if len(real_at) else 0
    gap_sym = np.full(n_entries, span - 1, dtype=np.int64)
    idx_sym = np.zeros(n_entries, dtype=np.int64)
    gap_sym[real_at] = gaps % span
    idx_sym[real_at] = labels + 1
    return idx_sym, gap_sym


def _table_bytes(alphabet: int) -> int:
    return 4 + (alphabet + 1) // 2


def _stream_cost(symbols: np.ndarray) -> tuple[int, np.ndarray]:
    """Bytes of a Huffman-coded stream with its code-length table; and the lengths."""
    counts = np.bincount(symbols) if len(symbols) else np.zeros(1, dtype=np.int64)
    lengths = huffman.code_lengths(counts)
    return _table_bytes(len(counts)) + 4 + (huffman.coded_bits(counts, lengths) + 7) // 8, lengths


def best_gap_bits(positions: np.ndarray, labels: np.ndarray, max_bits: int = 16) -> int:
    """The gap field width that makes the layer's record smallest (tables, fillers and streams)."""
    if len(positions) == 0:
        return 1
    widest = int(np.diff(positions, prepend=-1).max())
    best, best_bytes = 1, None
    for k in range(1, min(max_bits, max(1, widest.bit_length())) + 1):
        idx_sym, gap_sym = entry_streams(positions, labels, k)
        size = _stream_cost(idx_sym)[0] + _stream_cost(gap_sym)[0]
        if best_bytes is None or size < best_bytes:
            best, best_bytes = k, size
    return best


@dataclass
class SparseStats:
    """What one sparse record holds, for the report."""
    entries: int      # weights + fillers
    fillers: int
    gap_bits: int
    index_bits: int   # Huffman-coded bits of the index stream
    gap_bits_total: int
    codebook_bytes: int
    record_bytes: int


def encode_sparse(q: SharedWeights, codebook_dtype: int = 1, gap_bits: int | None = None) -> tuple[bytes, SparseStats]:
    positions = q.positions.numpy().astype(np.int64)
    labels = q.labels.numpy().astype(np.int64)
    if gap_bits is None:
        gap_bits = best_gap_bits(positions, labels)
    idx_sym, gap_sym = entry_streams(positions, labels, gap_bits)
    np_dtype = CODEBOOK_DTYPES[codebook_dtype][0]
    codebook = q.centroids.detach().numpy().astype(np_dtype)
    parts = [struct.pack("<BBBI", q.bits, gap_bits, codebook_dtype, len(codebook)), codebook.tobytes(),
             struct.pack("<I", len(idx_sym))]
    coded_bits = []
    for sym in (idx_sym, gap_sym):
        counts = np.bincount(sym) if len(sym) else np.zeros(1, dtype=np.int64)
        lengths = huffman.code_lengths(counts)
        data, nbits = huffman.encode(sym, lengths)
        parts += [struct.pack("<I", len(counts)), huffman.pack_lengths(lengths), struct.pack("<I", nbits), data]
        coded_bits.append(nbits)
    body = b"".join(parts)
    fillers = len(idx_sym) - len(positions)
    return body, SparseStats(len(idx_sym), fillers, gap_bits, coded_bits[0], coded_bits[1], codebook.nbytes, 0)


class _Reader:
    """Bounds-checked reads from a byte string; every overrun is a ValueError naming ``where``."""

    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.pos, self.where = data, 0, where

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ValueError(f"{self.where}: truncated: {what} needs {n} bytes at offset {self.pos}, "
                             f"{len(self.data) - self.pos} left")
        out = self.data[self.pos: self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))

    def done(self) -> None:
        if self.pos != len(self.data):
            raise ValueError(f"{self.where}: {len(self.data) - self.pos} unexpected bytes after the record")


def decode_sparse(r: _Reader, shape: tuple[int, ...], numel: int) -> torch.Tensor:
    bits, gap_bits, cb_dtype, n_centroids = r.unpack("<BBBI", "sparse header")
    if not 1 <= gap_bits <= 16:
        raise ValueError(f"{r.where}: gap field width {gap_bits} bits is outside 1..16")
    if not 1 <= bits <= 16:
        raise ValueError(f"{r.where}: index width {bits} bits is outside 1..16")
    if cb_dtype not in CODEBOOK_DTYPES:
        raise ValueError(f"{r.where}: unknown codebook dtype {cb_dtype}")
    if n_centroids > (1 << bits):
        raise ValueError(f"{r.where}: {n_centroids} centroids exceed 2^{bits}")
    np_dtype, _ = CODEBOOK_DTYPES[cb_dtype]
    codebook = np.frombuffer(r.take(n_centroids * np_dtype.itemsize, "codebook"), dtype=np_dtype).astype(np.float32)
    (n_entries,) = r.unpack("<I", "entry count")
    if n_entries > numel:
        raise ValueError(f"{r.where}: {n_entries} entries for a tensor of {numel} elements")
    streams = []
    for what, max_alphabet in (("index", n_centroids + 1), ("gap", 1 << gap_bits)):
        (alphabet,) = r.unpack("<I", f"{what} alphabet size")
        if not 1 <= alphabet <= max_alphabet:
            raise ValueError(f"{r.where}: {what} alphabet of {alphabet} symbols, at most {max_alphabet} allowed")
        lengths = huffman.unpack_lengths(r.take((alphabet + 1) // 2, f"{what} code lengths"), alphabet)
        (nbits,) = r.unpack("<I", f"{what} stream length")
        data = r.take((nbits + 7) // 8, f"{what} stream")
        try:
            streams.append(huffman.decode(data, nbits, lengths, n_entries))
        except ValueError as e:
            raise ValueError(f"{r.where}: {what} stream: {e}") from None
    idx_sym, gap_sym = streams
    positions = np.cumsum(gap_sym + 1) - 1
    if len(positions) and positions[-1] >= numel:
        raise ValueError(f"{r.where}: weight position {int(positions[-1])} is outside the tensor's {numel} elements")
    values = np.concatenate([np.zeros(1, dtype=np.float32), codebook])[idx_sym]
    out = np.zeros(numel, dtype=np.float32)
    out[positions] = values
    return torch.from_numpy(out).view(shape)


# --------------------------------------------------------------------------------------------------
# Whole file


def _record_head(name: str, encoding: int, shape: tuple[int, ...]) -> bytes:
    raw = name.encode("utf-8")
    if len(raw) > 255:
        raise ValueError(f"tensor name too long for the format: {name}")
    return struct.pack("<B", len(raw)) + raw + struct.pack("<BB", encoding, len(shape)) + struct.pack(f"<{len(shape)}I", *shape)


def encode_file(meta: dict[str, Any], dense: dict[str, torch.Tensor], dense_encodings: dict[str, int],
                sparse: dict[str, SharedWeights], codebook_dtype: int = 1,
                gap_bits: dict[str, int] | None = None) -> tuple[bytes, dict[str, dict[str, Any]]]:
    """The .cnnz bytes of a model, and per-record statistics (bytes, encoding, ...).

    ``dense`` and ``sparse`` are keyed by state-dict name; records are written in ``dense | sparse``
    order as given by ``meta["tensor_order"]`` when present, else dense then sparse.
    """
    meta_raw = json.dumps(meta, separators=(",", ":"), sort_keys=True).encode("utf-8")
    if len(meta_raw) > MAX_META_BYTES:
        raise ValueError(f"metadata of {len(meta_raw)} bytes exceeds {MAX_META_BYTES}")
    names = list(dense) + list(sparse)
    out = [MAGIC, struct.pack("<HH", VERSION, 0), struct.pack("<I", len(meta_raw)), meta_raw, struct.pack("<I", len(names))]
    stats: dict[str, dict[str, Any]] = {}
    for name in names:
        if name in sparse:
            q = sparse[name]
            body, s = encode_sparse(q, codebook_dtype, (gap_bits or {}).get(name))
            payload = _record_head(name, ENC_SPARSE, q.shape) + body
            stats[name] = dict(encoding=ENCODING_NAMES[ENC_SPARSE], entries=s.entries, fillers=s.fillers,
                               gap_bits=s.gap_bits, index_stream_bits=s.index_bits, gap_stream_bits=s.gap_bits_total,
                               codebook_bytes=s.codebook_bytes)
        else:
            t, enc = dense[name], dense_encodings[name]
            np_dtype, torch_dtype = _DENSE_DTYPES[enc]
            body = t.detach().to(torch_dtype).contiguous().numpy().astype(np_dtype).tobytes()
            payload = _record_head(name, enc, tuple(t.shape)) + body
            stats[name] = dict(encoding=ENCODING_NAMES[enc])
        stats[name]["record_bytes"] = 8 + len(payload)
        out += [struct.pack("<I", len(payload)), payload, struct.pack("<I", zlib.crc32(payload))]
    blob = b"".join(out)
    return blob + struct.pack("<I", zlib.crc32(blob)), stats


def decode_file(data: bytes, source: str = "<bytes>", check_crc: bool = True) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(metadata, {state-dict name: tensor}) of a .cnnz file's bytes. ``check_crc=False`` exists
    for tests that reach the parser's own checks behind the checksums."""
    _check_header(data, source, check_crc)
    r = _Reader(data[:-4], source)
    r.take(8, "header")
    (meta_len,) = r.unpack("<I", "metadata length")
    if meta_len > MAX_META_BYTES:
        raise ValueError(f"{source}: metadata of {meta_len} bytes exceeds the {MAX_META_BYTES}-byte cap")
    try:
        meta = json.loads(r.take(meta_len, "metadata").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{source}: metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{source}: metadata is not a JSON object")
    (n_records,) = r.unpack("<I", "record count")
    if n_records > MAX_RECORDS:
        raise ValueError(f"{source}: {n_records} records exceed the cap of {MAX_RECORDS}")
    tensors: dict[str, torch.Tensor] = {}
    total = 0
    for i in range(n_records):
        (length,) = r.unpack("<I", f"record {i} length")
        payload = r.take(length, f"record {i}")
        (crc,) = r.unpack("<I", f"record {i} CRC")
        if check_crc and zlib.crc32(payload) != crc:
            raise ValueError(f"{source}: record {i}: CRC32 mismatch")
        name, t = _decode_record(_Reader(payload, f"{source}: record {i}"), source, tensors, total)
        total += t.numel()
        tensors[name] = t
    r.done()
    return meta, tensors


def _check_header(data: bytes, source: str, check_crc: bool) -> None:
    if len(data) < 4 + 4 + 4 + 4 + 4:
        raise ValueError(f"{source}: not a .cnnz file (only {len(data)} bytes)")
    if data[:4] != MAGIC:
        raise ValueError(f"{source}: not a .cnnz file (magic bytes {data[:4]!r}, expected {MAGIC!r})")
    version, flags = struct.unpack("<HH", data[4:8])
    if version != VERSION:
        raise ValueError(f"{source}: .cnnz format version {version}; this cnnzoo reads version {VERSION}")
    if check_crc:
        (stored,) = struct.unpack("<I", data[-4:])
        if zlib.crc32(data[:-4]) != stored:
            raise ValueError(f"{source}: file CRC32 mismatch (truncated or corrupted file)")


def _decode_record(rr: _Reader, source: str, seen: dict[str, torch.Tensor], total: int) -> tuple[str, torch.Tensor]:
    """(name, tensor) of one record; ``total`` elements were decoded before it (the file's cap)."""
    (name_len,) = rr.unpack("<B", "name length")
    try:
        name = rr.take(name_len, "name").decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{rr.where}: name is not UTF-8") from None
    rr.where = f"{source}: tensor {name!r}"
    if name in seen:
        raise ValueError(f"{rr.where}: appears twice")
    encoding, ndim = rr.unpack("<BB", "encoding")
    if encoding not in ENCODING_NAMES:
        raise ValueError(f"{rr.where}: unknown encoding {encoding}")
    if ndim > MAX_NDIM:
        raise ValueError(f"{rr.where}: {ndim} dimensions exceed {MAX_NDIM}")
    shape = rr.unpack(f"<{ndim}I", "shape")
    numel = 1
    for s in shape:
        numel *= s
    if numel > MAX_ELEMENTS or total + numel > MAX_ELEMENTS:
        raise ValueError(f"{rr.where}: shape {list(shape)} takes the file over the cap of {MAX_ELEMENTS} elements")
    if encoding == ENC_SPARSE:
        t = decode_sparse(rr, shape, numel)
    else:
        np_dtype, _ = _DENSE_DTYPES[encoding]
        arr = np.frombuffer(rr.take(numel * np_dtype.itemsize, "dense values"), dtype=np_dtype)
        t = torch.from_numpy(arr.astype(np.float32 if encoding != ENC_INT64 else np.int64)).view(shape)
    rr.done()
    return name, t


def write_cnnz(path: str | Path, blob: bytes) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(blob))


def read_cnnz(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"compressed model not found: {path}")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise ValueError(f"{path}: {size} bytes is over the {MAX_FILE_BYTES}-byte cap for a .cnnz file")
    return decode_file(path.read_bytes(), str(path))


# --------------------------------------------------------------------------------------------------
# Rebuilding the model


def _check_meta(meta: dict[str, Any], source: str) -> None:
    def need(key: str, kind: type, lo: int | None = None, hi: int | None = None) -> None:
        v = meta.get(key)
        if not isinstance(v, kind) or isinstance(v, bool) or (lo is not None and not lo <= v <= hi):
            raise ValueError(f"{source}: metadata field {key!r} is {v!r}, expected a {kind.__name__}"
                             + (f" in {lo}..{hi}" if lo is not None else ""))
    need("model", str)
    need("num_classes", int, 1, 1 << 20)
    need("in_chans", int, 1, 1 << 12)
    need("kwargs", dict)
    for key, kinds in (("mean", (int, float)), ("std", (int, float)), ("input_size", (int,)), ("classes", (str,))):
        v = meta.get(key)
        if v is not None and not (isinstance(v, list) and len(v) <= 1 << 20
                                  and all(isinstance(x, kinds) and not isinstance(x, bool) for x in v)):
            raise ValueError(f"{source}: metadata field {key!r} is {str(v)[:80]}, expected a list of "
                             f"{' or '.join(k.__name__ for k in kinds)}")


def build_model(meta: dict[str, Any], tensors: dict[str, torch.Tensor], source: str) -> nn.Module:
    """The registered model of ``meta`` with ``tensors`` loaded; shapes are compared on the meta
    device first, so a hostile header cannot make this allocate more than its tensors."""
    _check_meta(meta, source)
    args = dict(num_classes=meta["num_classes"], in_chans=meta["in_chans"], **meta["kwargs"])
    try:
        with torch.device("meta"):
            skeleton = create_model(meta["model"], **args)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    except Exception as e:  # noqa: BLE001 - any constructor failure on a file's arguments is the file's fault
        raise ValueError(f"{source}: cannot build {meta['model']!r} with {args}: {e}") from None
    expected = {k: tuple(v.shape) for k, v in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise ValueError(f"{source}: tensors do not match {meta['model']}: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, shape in expected.items():
        if tuple(tensors[k].shape) != shape:
            raise ValueError(f"{source}: tensor {k!r} has shape {list(tensors[k].shape)}, {meta['model']} needs {list(shape)}")
    del skeleton
    model = create_model(meta["model"], **args)
    state = model.state_dict()
    model.load_state_dict({k: tensors[k].to(state[k].dtype) for k in state})
    model.set_pretrained_cfg(**{k: tuple(meta[k]) for k in ("mean", "std", "input_size") if k in meta})
    return model


def load_compressed(path: str | Path) -> nn.Module:
    """A dense model rebuilt from a .cnnz file, in eval mode; its logits equal those of the quantized
    model that was written, exactly."""
    meta, tensors = read_cnnz(path)
    return build_model(meta, tensors, str(path)).eval()


def load_compressed_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """(model in eval mode, metadata): the pair ``cnnzoo.models.checkpoint.load_checkpoint`` returns, for .cnnz files."""
    meta, tensors = read_cnnz(path)
    model = build_model(meta, tensors, str(path)).eval()
    meta.setdefault("classes", [str(i) for i in range(model.pretrained_cfg["num_classes"])])
    return model, meta
