"""Lossless coding of one 8-bit image: MED prediction and context-modelled rANS (the store's L chunks).

The chains zarr ships (a delta filter and zstd) stay near the order-0 entropy of a linear prediction
residual; coding the residual of a nonlinear predictor under a context of local activity, as JPEG-LS and CALIC
do, gets close to its conditional entropy, in one pass of Numba each way (sizes: docs/store.md). The model
(prediction, contexts, tokens and their frequencies) is `kernels.lossless_model`; this module holds the stream
and the coder.

Stream (little endian): version (u8); rows, cols (u32 each); per context, the number of token codes that follow
(u8; 0 = context unused) and one u8 code per token: 0 = absent, k = a count of about 2^((k - 1) / 16); the raw
bits' byte count (u32) and the raw bits (least significant first, in pixel order); two interleaved rANS states
(u32 each; pixel j is coded by state j mod 2) and the rANS bytes to the end. Both directions run without
data-dependent branches in their inner loops (renormalisation and raw bits by masks), so their speed does not
depend on the image.
"""

import numpy as np

from kernels.jit import kernel
from kernels.lossless_model import (
    CODE_WEIGHT,
    CTX_OF_ACTIVITY,
    EXTRA_BITS,
    N_CTX,
    N_TOKENS,
    PROB_BITS,
    PROB_SCALE,
    TOKEN_BASE,
    TOKEN_OF,
    activity_of,
    edge_neighbours,
    normalise,
    predict,
    residuals_kernel,
)

VERSION = 1
RANS_LOW = 1 << 23  # rANS state lower bound; bytes are emitted / read one at a time, at most two per pixel
HEADER_BYTES = 1 + 4 + 4
ERROR = -1  # what the kernels return for a malformed stream (decoder) or an overrun buffer (encoder)


def max_encoded_bytes(rows: int, cols: int) -> int:
    """An upper bound of the encoded size of a rows x cols image (the buffer `encode_kernel` needs)."""
    return HEADER_BYTES + N_CTX * (1 + N_TOKENS) + 4 + 8 + rows * cols * 3 + 16


@kernel()
def _put_u32(out, pos, v):
    for s in range(4):
        out[pos + s] = np.uint8((v >> (8 * s)) & 255)
    return pos + 4


@kernel()
def _get_u32(buf, pos):
    v = 0
    for s in range(4):
        v |= np.int64(buf[pos + s]) << (8 * s)
    return v


@kernel()
def encode_kernel(img, out, weight, token_of, extra_bits, ctx_of_activity, residual, activity, symbol):
    """Encode img (rows, cols) uint8 into out (uint8, at least `max_encoded_bytes`); returns the byte count.

    residual (uint8), activity (uint16), symbol (uint16): scratch of rows * cols each.
    """
    rows, cols = img.shape
    n = rows * cols
    residuals_kernel(img, residual, activity)
    # Tokens, contexts and raw bits, in pixel order.
    counts = np.zeros((2, N_CTX * N_TOKENS), np.int64)  # two histograms: no store-to-load chain on repeats
    raw = np.empty(n + 8, np.uint8)  # at most 6 raw bits per pixel: n bytes always suffice
    n_raw = 0
    acc = np.uint64(0)
    n_acc = np.uint64(0)
    for p in range(n):
        u = residual[p]
        t = token_of[u]
        sym = np.int64(ctx_of_activity[activity[p]]) * N_TOKENS + t
        symbol[p] = sym
        counts[p & 1, sym] += 1
        extra = np.uint64(extra_bits[t])
        acc |= (np.uint64(u) & ((np.uint64(1) << extra) - np.uint64(1))) << n_acc
        n_acc += extra
        if n_acc >= np.uint64(32):
            for s in range(4):
                raw[n_raw + s] = np.uint8((acc >> np.uint64(8 * s)) & np.uint64(255))
            n_raw += 4
            acc >>= np.uint64(32)
            n_acc -= np.uint64(32)
    while n_acc > np.uint64(0):
        raw[n_raw] = np.uint8(acc & np.uint64(255))
        n_raw += 1
        acc >>= np.uint64(8)
        n_acc -= min(n_acc, np.uint64(8))
    codes = np.zeros((N_CTX, N_TOKENS), np.uint8)
    for k in range(N_CTX):
        for t in range(N_TOKENS):
            c = counts[0, k * N_TOKENS + t] + counts[1, k * N_TOKENS + t]
            if c > 0:
                codes[k, t] = min(255, 1 + int(np.floor(16.0 * np.log2(c) + 0.5)))
    freq = np.empty((N_CTX, N_TOKENS), np.int64)
    cum = np.empty((N_CTX, N_TOKENS), np.int64)
    normalise(codes, weight, freq, cum)

    out[0] = VERSION
    pos = _put_u32(out, 1, rows)
    pos = _put_u32(out, pos, cols)
    for k in range(N_CTX):
        used = 0
        for t in range(N_TOKENS):
            if codes[k, t] > 0:
                used = t + 1
        out[pos] = used
        out[pos + 1 : pos + 1 + used] = codes[k, :used]
        pos += 1 + used
    pos = _put_u32(out, pos, n_raw)
    out[pos : pos + n_raw] = raw[:n_raw]
    pos += n_raw

    # rANS, pixels backwards, bytes written backwards from the end of out (then moved after the raw bits).
    # x // f is (x * ceil(2^44 / f)) >> 44: exact for x < 2^19 f (x after renormalisation) and f <= 2^12.
    freq_flat = np.empty(N_CTX * N_TOKENS, np.uint64)
    cum_flat = np.empty(N_CTX * N_TOKENS, np.uint64)
    recip = np.zeros(N_CTX * N_TOKENS, np.uint64)
    for k in range(N_CTX):
        for t in range(N_TOKENS):
            f = freq[k, t]
            freq_flat[k * N_TOKENS + t] = f
            cum_flat[k * N_TOKENS + t] = cum[k, t]
            if f > 0:
                recip[k * N_TOKENS + t] = ((1 << 44) + f - 1) // f
    end = out.shape[0]
    w = end
    x = np.uint64(RANS_LOW)  # the state of pixel j's parity (j = n - 1 first)
    other = np.uint64(RANS_LOW)
    scale = np.uint64((RANS_LOW >> PROB_BITS) << 8)
    for j in range(n - 1, -1, -1):
        sym = symbol[j]
        f = freq_flat[sym]
        x_max = scale * f
        if w < pos + 16:
            return ERROR  # cannot happen with a buffer of `max_encoded_bytes`
        # x < 2^31 and x_max >= 2^19: at most two bytes, both written, the pointer moved by the count.
        emit = np.uint64(x >= x_max) + np.uint64(x >= (x_max << np.uint64(8)))
        out[w - 1] = np.uint8(x & np.uint64(255))
        out[w - 2] = np.uint8((x >> np.uint64(8)) & np.uint64(255))
        w -= emit
        x >>= np.uint64(8) * emit
        q = (x * recip[sym]) >> np.uint64(44)
        x = q * np.uint64(PROB_SCALE) + (x - q * f) + cum_flat[sym]
        x, other = other, x
    # After the loop x holds the odd pixels' state and other the even ones': the even state is read first.
    for state in (x, other):
        for s in range(4):
            w -= 1
            out[w] = np.uint8((state >> np.uint64(8 * (3 - s))) & np.uint64(255))
    length = end - w
    out[pos : pos + length] = out[w:end].copy()
    return pos + length


@kernel()
def _decode_pixel(a, b, c, d, left_error, state, tables):
    """One pixel of `decode_kernel`: (value, |e|, the new state).

    state: (x, other, acc, n_acc, pos, raw, bad): this pixel's rANS state and the next one's, the raw-bit
    accumulator and its bit count, the stream and raw-bit positions, the error flag.
    tables: (buf, last, raw_last, lut, packed, extra_bits, token_base, ctx_of_activity).
    """
    x, other, acc, n_acc, pos, raw, bad = state
    buf, last, raw_last, lut, packed, extra_bits, token_base, ctx_of_activity = tables
    k = np.int64(ctx_of_activity[activity_of(a, b, c, d, left_error)])
    slot = x & np.uint64(PROB_SCALE - 1)
    t = np.int64(lut[k * PROB_SCALE + slot])
    fc = packed[k * N_TOKENS + t]
    f = fc & np.uint64(0xFFFF)
    x = f * (x >> np.uint64(PROB_BITS)) + slot - (fc >> np.uint64(16))
    # At most two bytes: both read (clamped to the stream), the state shifted by the count.
    more = np.uint64(x < np.uint64(RANS_LOW)) + np.uint64(x < np.uint64(RANS_LOW >> 8))
    word = (np.uint64(buf[min(pos, last)]) << np.uint64(8)) | np.uint64(buf[min(pos + 1, last)])
    x = (x << (np.uint64(8) * more)) | (word >> (np.uint64(8) * (np.uint64(2) - more)))
    pos += more
    bad |= (f == 0) | (x >= np.uint64(1 << 31))  # a token absent from its context; a state no encoder makes
    extra = extra_bits[t]  # one byte refills the <= 6 raw bits a token needs
    refill = n_acc < extra
    acc |= np.uint64(buf[min(raw, raw_last)] * refill) << np.uint64(n_acc)
    raw += refill
    n_acc += 8 * refill - extra
    u = token_base[t] | np.int32(acc & np.uint64((1 << extra) - 1))
    acc >>= np.uint64(extra)
    e = (u >> 1) ^ -(u & 1)
    return np.uint8((predict(a, b, c) + e) & 255), abs(e), (other, x, acc, n_acc, pos, raw, bad)


@kernel()
def decode_kernel(buf, img, weight, extra_bits, token_base, ctx_of_activity):
    """Decode buf into img (rows, cols) uint8, whose shape must be the stream's; returns 0, or ERROR (-1) for a
    malformed or truncated stream or a shape mismatch. Every read is bounds-checked (indices are clamped and
    an overrun is reported at the end)."""
    rows, cols = img.shape
    size = buf.shape[0]
    if size < HEADER_BYTES or buf[0] != VERSION or _get_u32(buf, 1) != rows or _get_u32(buf, 5) != cols:
        return ERROR
    pos = HEADER_BYTES
    codes = np.zeros((N_CTX, N_TOKENS), np.uint8)
    for k in range(N_CTX):
        if pos >= size:
            return ERROR
        used = buf[pos]
        if used > N_TOKENS or pos + 1 + used > size:
            return ERROR
        codes[k, :used] = buf[pos + 1 : pos + 1 + used]
        pos += 1 + used
    freq = np.empty((N_CTX, N_TOKENS), np.int64)
    cum = np.empty((N_CTX, N_TOKENS), np.int64)
    normalise(codes, weight, freq, cum)
    # Per context: slot -> token, and per (context, token): freq | cum << 16. An unused context maps every slot
    # to a token of frequency 0, which the loop reports.
    lut = np.zeros(N_CTX * PROB_SCALE, np.uint8)
    packed = np.zeros(N_CTX * N_TOKENS, np.uint64)
    for k in range(N_CTX):
        for t in range(N_TOKENS):
            packed[k * N_TOKENS + t] = freq[k, t] | (cum[k, t] << 16)
            lut[k * PROB_SCALE + cum[k, t] : k * PROB_SCALE + cum[k, t] + freq[k, t]] = t
    if pos + 4 > size:
        return ERROR
    raw = pos + 4
    raw_end = raw + _get_u32(buf, pos)
    if raw_end + 8 > size:
        return ERROR
    x = np.uint64(_get_u32(buf, raw_end))
    other = np.uint64(_get_u32(buf, raw_end + 4))
    pos = raw_end + 8
    state = (x, other, np.uint64(0), 0, pos, raw, False)
    tables = (buf, size - 1, max(raw_end - 1, 0), lut, packed, extra_bits, token_base, ctx_of_activity)
    for y in range(rows):
        inner = y > 0 and cols >= 3
        left_error = np.int32(0)
        for i in range(cols if not inner else 1):
            a, b, c, d = edge_neighbours(img, y, i)
            img[y, i], left_error, state = _decode_pixel(a, b, c, d, left_error, state, tables)
        if not inner:
            continue
        cur, above = img[y], img[y - 1]
        a = np.int32(cur[0])
        for i in range(1, cols - 1):
            b, c, d = np.int32(above[i]), np.int32(above[i - 1]), np.int32(above[i + 1])
            v, left_error, state = _decode_pixel(a, b, c, d, left_error, state, tables)
            cur[i] = v
            a = np.int32(v)
        a, b, c, d = edge_neighbours(img, y, cols - 1)
        img[y, cols - 1], left_error, state = _decode_pixel(a, b, c, d, left_error, state, tables)
    pos, raw, bad = state[4], state[5], state[6]
    if bad or pos > size or raw > raw_end:
        return ERROR
    return 0


def encode(img: np.ndarray) -> bytes:
    """The lossless stream of a 2-D uint8 image."""
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 2:
        raise TypeError(
            f"expected a 2-D uint8 array, got {getattr(img, 'dtype', type(img))} {getattr(img, 'shape', '')}"
        )
    img = np.ascontiguousarray(img)
    rows, cols = img.shape
    out = np.empty(max_encoded_bytes(rows, cols), np.uint8)
    residual = np.empty(rows * cols, np.uint8)
    activity = np.empty(rows * cols, np.uint16)
    symbol = np.empty(rows * cols, np.uint16)
    n = encode_kernel(img, out, CODE_WEIGHT, TOKEN_OF, EXTRA_BITS, CTX_OF_ACTIVITY, residual, activity, symbol)
    if n < 0:
        raise AssertionError("lossless encoder overran its buffer")
    return out[:n].tobytes()


def decode(data, rows: int, cols: int, out: np.ndarray | None = None) -> np.ndarray:
    """The (rows, cols) uint8 image of a stream from `encode`; ValueError if the stream is malformed."""
    buf = np.frombuffer(data, dtype=np.uint8)
    img = np.empty((rows, cols), np.uint8) if out is None else out
    if decode_kernel(buf, img, CODE_WEIGHT, EXTRA_BITS, TOKEN_BASE, CTX_OF_ACTIVITY) != 0:
        raise ValueError(f"malformed lossless image stream ({len(buf)} bytes for a {rows} x {cols} image)")
    return img
