"""Canonical Huffman coding of small integer alphabets (numpy encode, table-driven decode).

A canonical code is fully described by its code lengths (one byte per symbol of
the alphabet, 0 for an unused symbol), so that is all a file has to store.
"""
from __future__ import annotations

import heapq

import numpy as np

from edgeprune.errors import BadInput


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code length per symbol from symbol counts (0 for symbols that never occur).

    A single used symbol gets length 1 (a decoder needs at least one bit per symbol).
    """
    counts = np.asarray(counts, dtype=np.int64)
    used = np.flatnonzero(counts)
    lengths = np.zeros(len(counts), dtype=np.int64)
    if len(used) == 0:
        return lengths
    if len(used) == 1:
        lengths[used[0]] = 1
        return lengths
    # heap of (weight, tie-break, [symbols]); merging adds one bit to every symbol below
    heap = [(int(counts[s]), int(s), [int(s)]) for s in used]
    heapq.heapify(heap)
    tie = len(counts)
    while len(heap) > 1:
        w1, _, s1 = heapq.heappop(heap)
        w2, _, s2 = heapq.heappop(heap)
        for s in s1:
            lengths[s] += 1
        for s in s2:
            lengths[s] += 1
        heapq.heappush(heap, (w1 + w2, tie, s1 + s2))
        tie += 1
    if lengths.max() > 255:
        raise BadInput("Huffman code longer than 255 bits (alphabet too skewed)")
    return lengths


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """The canonical code of each symbol (as an integer of ``lengths[s]`` bits), ordered by (length, symbol)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(len(lengths), dtype=np.uint64)
    order = sorted((int(l), s) for s, l in enumerate(lengths) if l > 0)
    code, prev = 0, 0
    for l, s in order:
        code <<= l - prev
        codes[s] = code
        code += 1
        prev = l
    return codes


def encode(symbols: np.ndarray, lengths: np.ndarray) -> tuple[bytes, int]:
    """Bit-pack ``symbols`` with the canonical code of ``lengths``: (bytes, number of bits)."""
    symbols = np.asarray(symbols, dtype=np.int64)
    if len(symbols) == 0:
        return b"", 0
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.max() > 64:
        raise BadInput("Huffman codes longer than 64 bits are not supported")
    codes = canonical_codes(lengths)
    ls = lengths[symbols]
    if (ls == 0).any():
        raise BadInput("symbol without a code")
    total = int(ls.sum())
    which = np.repeat(np.arange(len(symbols)), ls)
    starts = np.cumsum(ls) - ls
    pos = np.arange(total) - np.repeat(starts, ls)
    shift = (ls[which] - 1 - pos).astype(np.uint64)
    bits = ((codes[symbols][which] >> shift) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bits).tobytes(), total


def decode(data: bytes, nbits: int, lengths: np.ndarray, count: int) -> np.ndarray:
    """Inverse of :func:`encode`: ``count`` symbols from the first ``nbits`` bits of ``data``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    out = np.empty(count, dtype=np.int64)
    if count == 0:
        return out
    bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:nbits].astype(np.int64)
    if len(bits) < nbits:
        raise BadInput("truncated bitstream")
    maxlen = int(lengths.max())
    if maxlen == 0:
        raise BadInput("empty Huffman table for a non-empty stream")
    codes = canonical_codes(lengths)
    # peek table over K bits: every K-bit window starting with a code of length <= K maps to (symbol, length)
    K = min(maxlen, 16)
    tab_sym = np.full(1 << K, -1, dtype=np.int64)
    tab_len = np.zeros(1 << K, dtype=np.int64)
    long_codes: dict[tuple[int, int], int] = {}
    for s in np.flatnonzero(lengths):
        l, c = int(lengths[s]), int(codes[s])
        if l <= K:
            lo = c << (K - l)
            tab_sym[lo : lo + (1 << (K - l))] = s
            tab_len[lo : lo + (1 << (K - l))] = l
        else:
            long_codes[(l, c)] = int(s)
    padded = np.concatenate([bits, np.zeros(K, dtype=np.int64)])
    windows = np.zeros(nbits + 1, dtype=np.int64)
    for j in range(K):
        windows = (windows << 1) | padded[j : j + nbits + 1]
    tab_sym_l, tab_len_l, win = tab_sym.tolist(), tab_len.tolist(), windows.tolist()
    bits_l = bits.tolist()
    p = 0
    for i in range(count):
        if p >= nbits:
            raise BadInput("bitstream ended before all symbols were decoded")
        w = win[p]
        l = tab_len_l[w]
        if l:
            out[i] = tab_sym_l[w]
            p += l
            continue
        # a code longer than K bits: extend bit by bit
        c, l = w, K
        while True:
            if p + l >= nbits:
                raise BadInput("bitstream ended inside a code")
            c = (c << 1) | bits_l[p + l]
            l += 1
            s = long_codes.get((l, c))
            if s is not None:
                out[i] = s
                p += l
                break
            if l > maxlen:
                raise BadInput("invalid code in bitstream")
    return out
