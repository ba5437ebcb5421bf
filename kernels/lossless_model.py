"""The model of the lossless coder (`kernels.lossless`): the prediction, the contexts and the tokens.

Apart from the stream and its rANS coder because the encoder and the decoder must share it to the bit: a pixel
decodes only where the decoder rebuilds the encoder's prediction, context, token and token frequencies.

For the pixel x at (row y, column i), its neighbours a (left), b (above), c (above left), d (above right)
(outside the image: a = the pixel above, else 0; b = a; c = b; d = b):
- prediction: the median edge detector of LOCO-I, MED(a, b, c) = min(a, b) if c >= max(a, b), max(a, b) if
  c <= min(a, b), else a + b - c;
- residual e = x - prediction, wrapped into [-128, 127], zigzagged to u in [0, 255] (0, -1, 1, -2, ...);
- context: activity |a - c| + |b - c| + |b - d| + 2 |e of the left pixel| (0 in the first column), at most
  ACT_MAX, quantized by ACT_THRESHOLDS into N_CTX classes;
- u is coded as a token: u itself below 16, else 16 + 2 (n - 4) + (the bit after u's leading bit), n =
  floor(log2 u), with the n - 1 lower bits sent raw; N_TOKENS = 24;
- token frequencies: the decoded counts normalised to 2^PROB_BITS per context (`normalise`, integer
  arithmetic, so that encoder and decoder agree on every machine).
"""

import numpy as np

from kernels.jit import kernel

N_TOKENS = 24
N_CTX = 12
PROB_BITS = 12
PROB_SCALE = 1 << PROB_BITS
ACT_MAX = 1023
ACT_THRESHOLDS = (2, 4, 6, 9, 12, 16, 21, 28, 37, 50, 70)  # context k: activity in [T[k - 1], T[k])
CTX_OF_ACTIVITY = np.digitize(np.arange(ACT_MAX + 1), ACT_THRESHOLDS).astype(np.uint8)
# The weight a frequency code stands for: code 0 = absent, code k >= 1 = round(16 * 2^((k - 1) / 16)).
CODE_WEIGHT = np.array([0] + [round(16 * 2 ** ((k - 1) / 16)) for k in range(1, 256)], dtype=np.int64)


def _token_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TOKEN_OF[u]; the raw-bit count EXTRA_BITS[token] and the smallest value TOKEN_BASE[token] of each token."""
    token_of = np.empty(256, np.uint8)
    base = np.zeros(N_TOKENS, np.int32)
    extra = np.zeros(N_TOKENS, np.int32)
    for u in range(256):
        nb = u.bit_length() - 1
        t = u if u < 16 else 16 + 2 * (nb - 4) + ((u >> (nb - 1)) & 1)
        token_of[u] = t
        if u < 16 or u & ((1 << (nb - 1)) - 1) == 0:
            base[t], extra[t] = u, (0 if u < 16 else nb - 1)
    return token_of, extra, base


TOKEN_OF, EXTRA_BITS, TOKEN_BASE = _token_tables()


@kernel()
def edge_neighbours(img, y, i):
    """(a, b, c, d) of the pixel (y, i), with the module's rules outside the image."""
    cols = img.shape[1]
    if i > 0:
        a = np.int32(img[y, i - 1])
    elif y > 0:
        a = np.int32(img[y - 1, i])
    else:
        a = np.int32(0)
    b = np.int32(img[y - 1, i]) if y > 0 else a
    c = np.int32(img[y - 1, i - 1]) if y > 0 and i > 0 else b
    d = np.int32(img[y - 1, i + 1]) if y > 0 and i + 1 < cols else b
    return a, b, c, d


@kernel()
def predict(a, b, c):
    """MED (LOCO-I's median edge detector), without branches."""
    hi = max(a, b)
    lo = min(a, b)
    p = a + b - c
    p = lo if c >= hi else p
    return hi if c <= lo else p


@kernel()
def activity_of(a, b, c, d, left_error):
    return min(abs(a - c) + abs(b - c) + abs(b - d) + 2 * left_error, ACT_MAX)


@kernel()
def _wrap(x, prediction):
    """The residual x - prediction, wrapped into [-128, 127]."""
    return ((x - prediction + 128) & 255) - 128


@kernel()
def _zigzag(e):
    return 2 * e if e >= 0 else -2 * e - 1


@kernel()
def _edge_pixel(img, y, i, left_error, u_out, act_out):
    """Residual and activity of the pixel (y, i) by the edge rules, into u_out and act_out; returns e."""
    a, b, c, d = edge_neighbours(img, y, i)
    e = _wrap(np.int32(img[y, i]), predict(a, b, c))
    u_out[y * img.shape[1] + i] = _zigzag(e)
    act_out[y * img.shape[1] + i] = activity_of(a, b, c, d, left_error)
    return e


@kernel()
def residuals_kernel(img, u_out, act_out):
    """Fill u_out (rows * cols,) uint8 with every pixel's zigzagged residual and act_out (uint16) with its
    activity. The encoder knows every pixel, so inside the image this runs as two passes over a row that LLVM
    vectorises; the first row and the first and last columns take the edge rules."""
    rows, cols = img.shape
    err = np.zeros(cols, np.int32)
    for y in range(rows):
        if y == 0 or cols < 3:
            left_error = np.int32(0)
            for i in range(cols):
                left_error = abs(_edge_pixel(img, y, i, left_error, u_out, act_out))
            continue
        err[0] = _edge_pixel(img, y, 0, np.int32(0), u_out, act_out)
        # Unsigned indices: Numba's wraparound checks on signed ones keep LLVM from vectorising these loops.
        cur, above = img[y], img[y - 1]
        one = np.uint64(1)
        base = np.uint64(y * cols)
        for i in range(one, np.uint64(cols - 1)):  # _wrap and _zigzag written out: as calls, 1.4x slower
            a, b, c = np.int32(cur[i - one]), np.int32(above[i]), np.int32(above[i - one])
            e = ((np.int32(cur[i]) - predict(a, b, c) + 128) & 255) - 128
            err[i] = e
            u_out[base + i] = np.uint8(2 * e if e >= 0 else -2 * e - 1)
        for i in range(one, np.uint64(cols - 1)):
            a, b, c, d = np.int32(cur[i - one]), np.int32(above[i]), np.int32(above[i - one]), np.int32(above[i + one])
            act_out[base + i] = np.uint16(activity_of(a, b, c, d, abs(err[i - one])))
        _edge_pixel(img, y, cols - 1, abs(err[cols - 2]), u_out, act_out)


@kernel()
def normalise(codes, weight, freq, cum):
    """Fill freq, cum (N_CTX, N_TOKENS) with the frequencies (sum 2^PROB_BITS per used context) of the codes:
    each present token gets max(1, floor(weight * 2^PROB_BITS / total)), the most frequent the remainder."""
    for k in range(N_CTX):
        total = 0
        for t in range(N_TOKENS):
            total += weight[codes[k, t]]
        s = 0
        top = 0
        for t in range(N_TOKENS):
            w = weight[codes[k, t]]
            f = max(1, (w * PROB_SCALE) // total) if w > 0 else 0
            freq[k, t] = f
            s += f
            if f > freq[k, top]:
                top = t
        if total > 0:
            freq[k, top] += PROB_SCALE - s
        run = 0
        for t in range(N_TOKENS):
            cum[k, t] = run
            run += freq[k, t]
