"""Canonical Huffman coding of integer symbol streams, vectorised with numpy.

Deep Compression's third stage codes the cluster indices and the relative positions of the
non-zero weights with Huffman codes (Han et al. 2016, section 4): both distributions are skewed,
so a variable-length code saves 20-30% over fixed-width fields.

The code is *canonical*: only the code length of each symbol is stored, and both sides rebuild the
same codewords from the lengths (shorter codes first, ties by symbol value). Lengths are limited to
``MAX_CODE_LEN`` bits so that they fit a 4-bit field and the decoder can use one lookup table of
``2 ** MAX_CODE_LEN`` entries.

Neither direction loops over bits in Python: the encoder scatters each code's bits into a bit array
``MAX_CODE_LEN`` times (once per bit position of a code), and the decoder looks up the symbol that
starts at *every* bit offset at once, then finds the offsets that really start a symbol by pointer
doubling (the offsets of symbols 0..2n-1 from those of 0..n-1 and a jump table of n symbols).
"""
from __future__ import annotations

import heapq

import numpy as np

MAX_CODE_LEN = 15  # fits a nibble; decode table of 32768 entries


def code_lengths(counts: np.ndarray, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """Huffman code length of each symbol (0 for symbols that never occur), at most ``max_len``.

    A single used symbol gets a 1-bit code (a code must have at least one bit to be decodable).
    Lengths over ``max_len`` are avoided by halving the counts (rounding up, so no used symbol
    drops out) and rebuilding: a standard, slightly sub-optimal but simple length limit.
    """
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    if len(used) > (1 << max_len):
        raise ValueError(f"{len(used)} symbols cannot have codes of at most {max_len} bits")
    c = counts[used].copy()
    while True:
        # heap of (weight, tie-break id, list of symbols in the subtree)
        heap = [(int(w), i, [i]) for i, w in enumerate(c)]
        heapq.heapify(heap)
        depth = np.zeros(len(c), dtype=np.int64)
        uid = len(c)
        while len(heap) > 1:
            w1, _, s1 = heapq.heappop(heap)
            w2, _, s2 = heapq.heappop(heap)
            merged = s1 + s2
            depth[merged] += 1
            heapq.heappush(heap, (w1 + w2, uid, merged))
            uid += 1
        if depth.max() <= max_len:
            lengths[used] = depth
            return lengths
        c = (c + 1) // 2


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """Codewords for the given code lengths (shorter first, then by symbol): the canonical code."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.int64)
    order = np.lexsort((np.arange(len(lengths)), lengths))
    code, prev_len = 0, 0
    for sym in order:
        n = int(lengths[sym])
        if n == 0:
            continue
        code <<= n - prev_len
        codes[sym] = code
        code += 1
        prev_len = n
    return codes


def check_lengths(lengths: np.ndarray) -> None:
    """A set of lengths read from a file must describe a prefix code (Kraft sum <= 1)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.size and (lengths.min() < 0 or lengths.max() > MAX_CODE_LEN):
        raise ValueError(f"Huffman code length out of range 0..{MAX_CODE_LEN}")
    used = lengths[lengths > 0]
    if len(used) == 0:
        return
    kraft = int(np.sum(np.left_shift(1, MAX_CODE_LEN - used)))
    if kraft > (1 << MAX_CODE_LEN):
        raise ValueError("Huffman code lengths do not form a prefix code (Kraft sum > 1)")


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Huffman-code ``symbols`` with the canonical code of ``lengths``; returns (bytes, bit count)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if symbols.size == 0:
        return b"", 0
    codes = canonical_codes(lengths)
    sym_len = np.asarray(lengths, dtype=np.int64)[symbols]
    if (sym_len == 0).any():
        raise ValueError("a symbol to encode has no code")
    sym_code = codes[symbols]
    ends = np.cumsum(sym_len)
    starts = ends - sym_len
    nbits = int(ends[-1])
    bits = np.zeros(nbits, dtype=np.uint8)
    for j in range(int(sym_len.max())):  # bit j of every code at once
        m = sym_len > j
        bits[starts[m] + j] = (sym_code[m] >> (sym_len[m] - 1 - j)) & 1
    return np.packbits(bits).tobytes(), nbits


def decode(data: bytes, nbits: int, lengths: np.ndarray, count: int) -> np.ndarray:
    """Decode exactly ``count`` symbols from the first ``nbits`` bits of ``data``.

    Raises ValueError when the stream is too short, holds a bit pattern that is no codeword, or has
    bits left over: a corrupt stream never yields a silently wrong tensor.
    """
    check_lengths(lengths)
    lengths = np.asarray(lengths, dtype=np.int64)
    if nbits > len(data) * 8:
        raise ValueError(f"Huffman stream claims {nbits} bits but holds {len(data) * 8}")
    if count == 0:
        if nbits:
            raise ValueError("Huffman stream has bits but no symbols")
        return np.zeros(0, dtype=np.int64)
    if count > nbits:
        raise ValueError(f"Huffman stream of {nbits} bits cannot hold {count} symbols")
    L = MAX_CODE_LEN
    # lookup table: the L-bit window starting with a codeword -> (symbol, length); length 0 = invalid
    table_sym = np.zeros(1 << L, dtype=np.int64)
    table_len = np.zeros(1 << L, dtype=np.int64)
    codes = canonical_codes(lengths)
    for sym in np.flatnonzero(lengths):
        n = int(lengths[sym])
        lo = int(codes[sym]) << (L - n)
        table_sym[lo: lo + (1 << (L - n))] = sym
        table_len[lo: lo + (1 << (L - n))] = n
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits]
    padded = np.concatenate([bits, np.zeros(L, dtype=np.uint8)]).astype(np.int32)
    window = np.zeros(nbits, dtype=np.int32)
    for j in range(L):  # the L-bit window at every bit offset
        window = (window << 1) | padded[j: j + nbits]
    sym_at = table_sym[window]
    len_at = table_len[window]
    # next[i]: the offset after the symbol starting at i; nbits is an absorbing end state
    nxt = np.append(np.arange(nbits) + len_at, nbits)
    nxt = np.minimum(nxt, nbits + 1)
    nxt = np.append(nxt, nbits + 1)  # nbits+1: "ran past the end", absorbing too
    nxt[nbits] = nbits + 1
    invalid_at = np.append(len_at == 0, [True, True])
    pos = np.zeros(1, dtype=np.int64)
    jump = nxt.astype(np.int64)
    while len(pos) < count:  # offsets of symbols 0..2n-1 from those of 0..n-1
        pos = np.concatenate([pos, jump[pos]])
        if len(pos) < count:
            jump = jump[jump]
    pos = pos[:count]
    if invalid_at[pos].any():
        bad = int(np.argmax(invalid_at[pos]))
        raise ValueError(f"Huffman stream is corrupt: symbol {bad} of {count} is no codeword or past the end")
    end = int(pos[-1] + len_at[pos[-1]])
    if end != nbits:
        raise ValueError(f"Huffman stream has {nbits} bits but its {count} symbols use {end}")
    return sym_at[pos]


def pack_lengths(lengths: np.ndarray) -> bytes:
    """Code lengths as 4-bit nibbles, two per byte (the alphabet size is stored by the caller)."""
    lengths = np.asarray(lengths, dtype=np.uint8)
    if len(lengths) % 2:
        lengths = np.append(lengths, np.uint8(0))
    return ((lengths[0::2] << 4) | lengths[1::2]).astype(np.uint8).tobytes()


def unpack_lengths(data: bytes, alphabet: int) -> np.ndarray:
    raw = np.frombuffer(data, dtype=np.uint8)
    out = np.empty(len(raw) * 2, dtype=np.int64)
    out[0::2], out[1::2] = raw >> 4, raw & 15
    return out[:alphabet]


def coded_bits(counts: np.ndarray, lengths: np.ndarray) -> int:
    """Bits the Huffman-coded stream with these symbol counts takes."""
    return int(np.dot(np.asarray(counts, dtype=np.int64), np.asarray(lengths, dtype=np.int64)))
