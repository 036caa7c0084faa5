"""The NumPy reference kernels: the specification every CUDA kernel is checked against.

Each function here is a pure computation on arrays (no autograd): the ops in minicnn/ops wire
them into forward/backward pairs. The CUDA backend (minicnn/backends/cuda.py) implements every
public name below with the same signature, so one op serves both devices.

Conventions shared by both backends:
    images are NCHW; conv weights are (F, C, kH, kW) like PyTorch
    stride = (sh, sw); pads = (top, bottom, left, right), all >= 0
    pooling indices are int32 positions h * W + w inside the (unpadded) input plane;
      ties go to the first window cell in row-major order (a strict '>' scan), on both devices
    the dropout mask comes from a counter-based RNG (Philox-4x32-10), so (seed, step) alone
    determines it and the GPU draws exactly the same mask as the CPU
"""
from __future__ import annotations

import math
import sys
import threading

import numpy as np

xp = np


# --------------------------------------------------------------------------- GEMM, linear

def gemm(a, b, trans_a=False, trans_b=False):
    """op(a) @ op(b), where op transposes when asked. a, b: 2-D."""
    return (a.T if trans_a else a) @ (b.T if trans_b else b)


def linear_forward(x, w, b):
    """x: (N, IN), w: (OUT, IN), b: (OUT,) or None -> y: (N, OUT) = x @ w.T + b."""
    y = gemm(x, w, trans_b=True)
    return y if b is None else y + b


def bias_grad(dy):
    """Sum of dy over every axis except 1 (channels / features): dy (N, F, ...) -> (F,)."""
    return dy.sum(axis=(0,) + tuple(range(2, dy.ndim)))


# --------------------------------------------------------------------------- im2col

def _pad(x, pads, value=0.0):
    top, bottom, left, right = pads
    if not any(pads):
        return x
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def _offsets(kernel, stride, out_hw):
    """For every kernel offset (i, j): the rows and columns of the padded input that offset
    reads, one per output pixel. Loops over these kH * kW slabs replace loops over pixels."""
    (kh, kw), (sh, sw), (ho, wo) = kernel, stride, out_hw
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i, i + sh * ho, sh), slice(j, j + sw * wo, sw)


def _output_size(x_shape, kernel, stride, pads):
    h, w = x_shape[2:]
    return ((h + pads[0] + pads[1] - kernel[0]) // stride[0] + 1,
            (w + pads[2] + pads[3] - kernel[1]) // stride[1] + 1)


_workspace = threading.local()  # the scratch buffers, one set per thread
COLUMNS_BYTES = 32 * 2 ** 20     # im2col's columns are built for as many images as fit in this


def _scratch(role, shape, dtype):
    """A reused array of `shape` for a temporary that lives only inside one call.

    A fresh array of tens of MB costs more in page faults than the copy that fills it. Each
    role (a name) keeps one buffer per thread, grown to the largest size asked for and handed
    out again as a view. No kernel returns a scratch array, so no result ever aliases one.
    """
    size = int(np.prod(shape))
    buffer = getattr(_workspace, role, None)
    if buffer is None or buffer.dtype != dtype or buffer.size < size:
        buffer = np.empty(size, dtype)
        setattr(_workspace, role, buffer)
    return buffer[:size].reshape(shape)


def _image_chunks(x_shape, kernel, stride, pads, itemsize):
    """Slices of the batch whose im2col columns fit in COLUMNS_BYTES (at least one image).

    Whole-batch columns are kH * kW times the input: 600 MB for vgg_like's second conv at
    batch 512. A chunk at a time keeps memory flat and the GEMMs still large.
    """
    n, c = x_shape[:2]
    ho, wo = _output_size(x_shape, kernel, stride, pads)
    per_image = c * kernel[0] * kernel[1] * ho * wo * itemsize
    step = max(1, COLUMNS_BYTES // per_image)
    return [slice(start, min(start + step, n)) for start in range(0, n, step)]


def _channels_first(a):
    """(N, F, Ho, Wo) -> (F, N * Ho * Wo), the layout of im2col's columns (a scratch copy)."""
    out = _scratch("channels_first", (a.shape[1], a.shape[0]) + a.shape[2:], a.dtype)
    out[...] = a.transpose(1, 0, 2, 3)
    return out.reshape(a.shape[1], -1)


def _im2col(x, kernel, stride, pads):
    """x: (N, C, H, W) -> cols: (C * kH * kW, N * Ho * Wo), one column per output pixel.

    Row (c, i, j) of cols holds input channel c shifted by kernel offset (i, j): the loop runs
    over the kH * kW offsets, each copying one strided slab, never over pixels. The input is
    first padded into a channel-major (C, N, Hp, Wp) copy, so every slab is read in memory
    order; this orientation makes every matmul below a well-shaped one for BLAS.
    cols is a scratch array (see _scratch): use it before the next _im2col.
    """
    n, c, h, w = x.shape
    top, bottom, left, right = pads
    ho, wo = _output_size(x.shape, kernel, stride, pads)
    xpad = _scratch("padded", (c, n, h + top + bottom, w + left + right), x.dtype)
    if any(pads):
        xpad.fill(0)
    xpad[:, :, top:top + h, left:left + w] = x.transpose(1, 0, 2, 3)
    cols = _scratch("cols", (c,) + tuple(kernel) + (n, ho, wo), x.dtype)
    for i, j, rows, columns in _offsets(kernel, stride, (ho, wo)):
        cols[:, i, j] = xpad[:, :, rows, columns]
    return cols.reshape(c * kernel[0] * kernel[1], n * ho * wo)


def _col2im(cols, x_shape, kernel, stride, pads):
    """The adjoint of _im2col: cols (C * kH * kW, N * Ho * Wo) -> dx (N, C, H, W).

    Every column is added back at the pixels it was copied from; overlapping windows add up.
    """
    n, c, h, w = x_shape
    top, bottom, left, right = pads
    ho, wo = _output_size(x_shape, kernel, stride, pads)
    cols = cols.reshape((c,) + tuple(kernel) + (n, ho, wo))
    dxpad = _scratch("padded", (c, n, h + top + bottom, w + left + right), cols.dtype)
    dxpad.fill(0)
    for i, j, rows, columns in _offsets(kernel, stride, (ho, wo)):
        dxpad[:, :, rows, columns] += cols[:, i, j]
    return dxpad[:, :, top:top + h, left:left + w].transpose(1, 0, 2, 3).copy()  # a copy: dxpad is scratch


# --------------------------------------------------------------------------- convolution

def conv2d_forward(x, w, b, stride, pads):
    """x: (N, C, H, W), w: (F, C, kH, kW), b: (F,) or None -> y: (N, F, Ho, Wo).

    y = w (F, C*kH*kW) @ _im2col(x) (C*kH*kW, N*Ho*Wo), then back to NCHW; a chunk of
    images at a time (_image_chunks).
    """
    f = w.shape[0]
    ho, wo = _output_size(x.shape, w.shape[2:], stride, pads)
    y = np.empty((x.shape[0], f, ho, wo), x.dtype)
    for images in _image_chunks(x.shape, w.shape[2:], stride, pads, x.itemsize):
        cols = _im2col(x[images], w.shape[2:], stride, pads)
        part = np.matmul(w.reshape(f, -1), cols, out=_scratch("channels_first", (f, cols.shape[1]), x.dtype))
        y[images] = part.reshape(f, -1, ho, wo).transpose(1, 0, 2, 3)
    if b is not None:
        y += b.reshape(f, 1, 1)
    return y


def conv2d_backward_data(dy, w, x_shape, stride, pads):
    """dy: (N, F, Ho, Wo), w: (F, C, kH, kW) -> dx: x_shape (N, C, H, W).

    d cols = w.T @ dy, and col2im scatters the columns back onto the input (a chunk of images
    at a time). With stride 1 that scatter is itself a convolution, which gathers instead
    (about twice as fast here): dx = conv(dy, w turned by 180 degrees with F and C swapped,
    pads k - 1 - p), used whenever those pads are >= 0 ('same' and 'valid' convolutions).
    """
    (kh, kw), (top, bottom, left, right) = w.shape[2:], pads
    full_pads = (kh - 1 - top, kh - 1 - bottom, kw - 1 - left, kw - 1 - right)
    if tuple(stride) == (1, 1) and min(full_pads) >= 0:
        turned = w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)  # (C, F, kH, kW)
        return conv2d_forward(dy, turned, None, (1, 1), full_pads)
    dx = np.empty(x_shape, dy.dtype)
    for images in _image_chunks(x_shape, w.shape[2:], stride, pads, dy.itemsize):
        dy_cf = _channels_first(dy[images])
        dcols = np.matmul(w.reshape(w.shape[0], -1).T, dy_cf,
                          out=_scratch("cols", (w[0].size, dy_cf.shape[1]), dy.dtype))
        dx[images] = _col2im(dcols, dx[images].shape, w.shape[2:], stride, pads)
    return dx


def conv2d_backward_weight(dy, x, kernel, stride, pads):
    """dy: (N, F, Ho, Wo), x: (N, C, H, W), kernel = (kH, kW) -> dw: (F, C, kH, kW).

    dw = dy @ _im2col(x).T, summed over chunks of images, each computed as (cols @ dy.T).T:
    BLAS is ~50x faster in that order here, because the long N * Ho * Wo axis is then the
    contiguous one of both operands.
    """
    f = dy.shape[1]
    dw_t = sum(_im2col(x[images], kernel, stride, pads) @ _channels_first(dy[images]).T  # (C*kH*kW, F)
               for images in _image_chunks(x.shape, kernel, stride, pads, x.itemsize))
    return np.ascontiguousarray(dw_t.T).reshape((f, x.shape[1]) + tuple(kernel))


# --------------------------------------------------------------------------- pooling

POOL_MODES = ("max", "min", "avg")


def _window_counts(x_shape, kernel, stride, pads, dtype):
    """How many real (unpadded) input cells each window covers: (Ho, Wo)."""
    out_hw = _output_size(x_shape, kernel, stride, pads)
    ones = _pad(np.ones((1, 1) + tuple(x_shape[2:]), dtype), pads)[0, 0]
    return sum(ones[rows, columns] for _, _, rows, columns in _offsets(kernel, stride, out_hw))


def pool2d_forward(x, mode, kernel, stride, pads):
    """x: (N, C, H, W) -> (y: (N, C, Ho, Wo), index: int32 (N, C, Ho, Wo) or None for avg).

    Padded cells never take part: they are -inf for max, +inf for min, and are left out of an
    average's count (TensorFlow's 'same' pooling behaves this way, and so does PyTorch's
    count_include_pad=False). Offsets are visited in row-major order and only a strictly
    better value replaces the current winner, so ties go to the first cell.
    """
    n, c, h, w = x.shape
    out_hw = _output_size(x.shape, kernel, stride, pads)
    if mode == "avg":
        xpad = _pad(x, pads)
        total = sum(xpad[:, :, rows, columns] for _, _, rows, columns in _offsets(kernel, stride, out_hw))
        return total / _window_counts(x.shape, kernel, stride, pads, x.dtype), None
    xpad = _pad(x, pads, -np.inf if mode == "max" else np.inf)
    better, keep_better = (np.greater, np.fmax) if mode == "max" else (np.less, np.fmin)
    # window (r, c) reads offset (i, j) at input position (r * sh + i - top) * W + c * sw + j - left
    corner = ((np.arange(out_hw[0])[:, None] * stride[0] - pads[0]) * w
              + np.arange(out_hw[1]) * stride[1] - pads[2]).astype(np.int32)
    offsets = _offsets(kernel, stride, out_hw)
    _, _, rows, columns = next(offsets)
    first = xpad[:, :, rows, columns]
    y = first.copy()
    index = np.empty(y.shape, np.int32)
    index[...] = corner
    wins = np.empty(y.shape, bool)
    for i, j, rows, columns in offsets:
        slab = xpad[:, :, rows, columns]
        better(slab, y, out=wins)  # strict, and false for NaN: a NaN after the first cell never wins
        # index = wins ? this offset's position : index, as arithmetic (no per-element branch)
        index += wins * (corner + (i * w + j) - index)
        keep_better(y, slab, out=y)  # fmax/fmin skip a NaN, as the strict comparison does
    # the strict scan keeps a NaN in the first cell, which fmax/fmin would have replaced
    first_is_nan = np.isnan(first)
    np.copyto(y, first, where=first_is_nan)
    np.copyto(index, corner, where=first_is_nan)
    return y, index


def pool2d_backward(dy, index, x_shape, mode, kernel, stride, pads):
    """dy: (N, C, Ho, Wo) -> dx: x_shape. index: from pool2d_forward (None for avg)."""
    n, c, h, w = x_shape
    if mode == "avg":
        share = (dy / _window_counts(x_shape, kernel, stride, pads, dy.dtype)).transpose(1, 0, 2, 3)
        cols = np.broadcast_to(share[:, None, None], (c,) + tuple(kernel) + share.shape[1:])
        return _col2im(cols, x_shape, kernel, stride, pads)  # each window cell gets its share
    # max/min: each output sends its gradient to the one input that won; windows overlap,
    # so several outputs may hit one input: bincount adds them up.
    plane = np.arange(n * c, dtype=np.int64).reshape(n, c, 1, 1) * (h * w)
    dx = np.bincount((plane + index).ravel(), weights=dy.ravel(), minlength=n * c * h * w)
    return dx.astype(dy.dtype).reshape(x_shape)


def global_avg_pool_forward(x):
    """x: (N, C, H, W) -> (N, C), the mean of each channel's map."""
    return x.mean(axis=(2, 3))


def global_avg_pool_backward(dy, x_shape):
    """dy: (N, C) -> dx: (N, C, H, W), each cell receiving dy / (H * W)."""
    h, w = x_shape[2:]
    return np.ascontiguousarray(np.broadcast_to((dy / (h * w))[:, :, None, None], x_shape))


# --------------------------------------------------------------------------- batch norm

def _stat_axes(x):
    return (0,) + tuple(range(2, x.ndim))  # every axis but the channel axis


def _per_channel(v, x):
    return v.reshape((1, -1) + (1,) * (x.ndim - 2))


def batch_norm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps, unbiased):
    """Normalize with the batch's statistics and update the running ones in place.

    x: (N, C) or (N, C, H, W); gamma, beta, running_*: (C,).
    momentum is the weight of the new batch in the running average (PyTorch's convention;
    Keras' momentum 0.99 is 0.01 here). unbiased: store n/(n-1) * var in running_var (PyTorch)
    or the plain batch variance (Keras).
    Returns y and what backward needs: mean (C,) and rstd = 1 / sqrt(var + eps) (C,).
    """
    axes = _stat_axes(x)
    count = x.size // x.shape[1]
    mean = x.mean(axis=axes)
    y = x - _per_channel(mean, x)  # centred now, normalized in place below
    var = np.square(y, out=_scratch("squares", y.shape, y.dtype)).mean(axis=axes)
    rstd = 1.0 / np.sqrt(var + eps)
    y *= _per_channel(rstd * gamma, x)
    y += _per_channel(beta, x)
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * (var * count / max(count - 1, 1) if unbiased else var)
    return y, mean, rstd


def batch_norm_forward_eval(x, gamma, beta, running_mean, running_var, eps):
    """Normalize with the running statistics (inference): an affine map per channel."""
    scale = gamma / np.sqrt(running_var + eps)
    return x * _per_channel(scale, x) + _per_channel(beta - running_mean * scale, x)


def batch_norm_backward(dy, x, gamma, mean, rstd, dx_sums=False):
    """Gradients of training-mode batch norm -> (dx, dgamma, dbeta), then with dx_sums the
    channel sums of dx (the bias gradient of a conv or linear layer before the batch norm).

    With xhat = (x - mean) * rstd and m values per channel:
        dx = gamma * rstd / m * (m * dy - sum(dy) - xhat * sum(dy * xhat))
    """
    axes = _stat_axes(x)
    count = x.size // x.shape[1]
    xhat = x - _per_channel(mean, x)
    xhat *= _per_channel(rstd, x)
    dbeta = dy.sum(axis=axes)
    dgamma = np.multiply(dy, xhat, out=_scratch("squares", x.shape, x.dtype)).sum(axis=axes)
    # the bracket, term by term in place: m * dy - sum(dy) - xhat * sum(dy * xhat)
    dx = np.multiply(dy, count)
    dx -= _per_channel(dbeta, x)
    dx -= np.multiply(xhat, _per_channel(dgamma, x), out=xhat)
    dx *= _per_channel(gamma * rstd / count, x)
    return _and_sums((dx, dgamma, dbeta), dx_sums)


def _and_sums(gradients, dx_sums):
    """(dx, ...) of a batch norm's backward, followed by the channel sums of dx if asked."""
    return gradients + (bias_grad(gradients[0]),) if dx_sums else gradients


# --------------------------------------------------------------------------- activations

def relu_forward(x):
    return np.maximum(x, 0)


def relu_backward(dy, y):
    """Uses the output y: the gradient passes where y > 0."""
    return dy * (y > 0)


def sigmoid_forward(x):
    # split by sign so that exp never overflows
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype)


def sigmoid_backward(dy, y):
    return dy * y * (1 - y)


def softmax_forward(x):
    """x: (N, K) -> probabilities along axis 1."""
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(dy, y):
    return y * (dy - (dy * y).sum(axis=1, keepdims=True))


def log_softmax_forward(x):
    shifted = x - x.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def log_softmax_backward(dy, y):
    return dy - np.exp(y) * dy.sum(axis=1, keepdims=True)


# --------------------------------------------------------------------------- loss

def cross_entropy_forward(logits, target):
    """Fused log-softmax + negative log-likelihood, mean over the batch.

    logits: (N, K); target: int labels (N,) or probabilities (N, K) (one-hot or soft).
    Returns (loss: 0-d array, probs: (N, K)); probs is what backward needs.
    """
    logp = log_softmax_forward(logits)
    n = logits.shape[0]
    if target.ndim == 1:
        picked = logp[np.arange(n), target]
    else:
        picked = (logp * target).sum(axis=1)
    return np.asarray(-picked.sum() / n), np.exp(logp)


def cross_entropy_forward_train(logits, target):
    """cross_entropy_forward and the gradient for dloss = 1 (what loss.backward() seeds a
    training step with) -> (loss, probs, dlogits (N, K))."""
    loss, probs = cross_entropy_forward(logits, target)
    return loss, probs, cross_entropy_backward(np.ones((), logits.dtype), probs, target)


def cross_entropy_backward(dloss, probs, target):
    """d loss / d logits = dloss * (probs - target) / N, target as in the forward."""
    n = probs.shape[0]
    grad = probs.copy()
    if target.ndim == 1:
        grad[np.arange(n), target] -= 1
    else:
        grad -= target
    return grad * (dloss / n)


# --------------------------------------------------------------------------- dropout

_PHILOX_M = (0xD2511F53, 0xCD9E8D57)
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_LOW32 = np.uint64(0xFFFFFFFF)


def philox4x32(counter_lo, counter_hi, step, seed):
    """Philox-4x32-10 (Salmon et al. 2011): 4 random uint32 words per counter.

    counter_lo, counter_hi: uint64 arrays holding 32-bit halves of the element counter;
    step and seed (ints) fill the other counter words and the key. Arithmetic is done in
    uint64 and masked to 32 bits, which is exactly what the CUDA kernel does with __umulhi.
    Returns four uint64 arrays of 32-bit values.

    One round maps (c0, c1, c2, c3) to (hi(M1 c2) ^ c1 ^ k0, lo(M1 c2), hi(M0 c0) ^ c3 ^ k1,
    lo(M0 c0)), then bumps the key by the Weyl constants. The round below computes it in place
    in the four counter arrays (no temporaries but one), because a dropout mask of a large
    batch is millions of counters and this loop is its whole cost.
    """
    c0, c1 = counter_lo.copy(), counter_hi.copy()
    c2 = np.full_like(counter_lo, step & 0xFFFFFFFF)
    c3 = np.full_like(counter_lo, (step >> 32) & 0xFFFFFFFF)
    high = np.empty_like(c0)
    k0, k1 = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    m0, m1, shift = np.uint64(_PHILOX_M[0]), np.uint64(_PHILOX_M[1]), np.uint64(32)
    for _ in range(10):
        np.multiply(c0, m0, out=c0)                 # c0 := M0 c0 (64-bit product)
        np.multiply(c2, m1, out=c2)                 # c2 := M1 c2
        c1 ^= np.right_shift(c2, shift, out=high)   # c1 := hi(M1 c2) ^ c1 ^ k0
        c1 ^= np.uint64(k0)
        c3 ^= np.right_shift(c0, shift, out=high)   # c3 := hi(M0 c0) ^ c3 ^ k1
        c3 ^= np.uint64(k1)
        c0 &= _LOW32                                # c0 := lo(M0 c0)
        c2 &= _LOW32                                # c2 := lo(M1 c2)
        c0, c1, c2, c3 = c1, c2, c3, c0
        k0, k1 = (k0 + _PHILOX_W[0]) & 0xFFFFFFFF, (k1 + _PHILOX_W[1]) & 0xFFFFFFFF
    return [c0, c1, c2, c3]


def dropout_forward(x, rate, seed, step):
    """Inverted dropout: keep each element with probability 1 - rate, scaled by 1 / (1 - rate).

    Element i uses word i % 4 of Philox(counter = i // 4, step; key = seed); its top 24 bits
    make a uniform u in [0, 1) and the element is kept when u >= rate.
    Returns (y, mask) with mask in x's dtype holding 0 or 1 / (1 - rate).
    """
    n = x.size
    counter = np.arange((n + 3) // 4, dtype=np.uint64)
    words = philox4x32(counter & _LOW32, counter >> np.uint64(32), step, seed)
    # u = top24 * 2**-24 >= rate  <=>  top24 >= ceil(rate * 2**24): the same test, exactly,
    # in integers (rate * 2**24 is exact in float64), without a float64 copy of every word
    threshold = np.uint64(math.ceil(rate * 2.0 ** 24))
    keep = np.empty((len(counter), 4), dtype=bool)
    for j, word in enumerate(words):
        np.greater_equal(np.right_shift(word, np.uint64(8), out=word), threshold, out=keep[:, j])
    mask = keep.reshape(-1)[:n].astype(x.dtype).reshape(x.shape)
    mask *= x.dtype.type(1 / (1 - rate))
    return x * mask, mask


def dropout_backward(dy, mask):
    return dy * mask


# --------------------------------------------------------------------------- optimizers

def adam_update(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps,
                weight_decay, decoupled):
    """One Adam step on lists of arrays, in place. step counts from 1 (bias correction).

    weight_decay with decoupled=False adds weight_decay * p to the gradient (L2, as Keras'
    kernel_regularizer / report B); decoupled=True shrinks p by lr * weight_decay (AdamW).
    """
    correction1, correction2 = 1 - beta1 ** step, 1 - beta2 ** step
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        if weight_decay and not decoupled:
            g = g + weight_decay * p
        m *= beta1
        m += (1 - beta1) * g
        v *= beta2
        v += (1 - beta2) * g * g
        if weight_decay and decoupled:
            p -= lr * weight_decay * p
        p -= lr * (m / correction1) / (np.sqrt(v / correction2) + eps)


def sgd_update(params, grads, velocities, lr, momentum, nesterov, weight_decay):
    """One SGD step in place (PyTorch's form: v = momentum * v + g; p -= lr * v, or with
    nesterov p -= lr * (g + momentum * v)). velocities may be None when momentum == 0."""
    for i, (p, g) in enumerate(zip(params, grads)):
        if weight_decay:
            g = g + weight_decay * p
        if momentum:
            v = velocities[i]
            v *= momentum
            v += g
            g = g + momentum * v if nesterov else v
        p -= lr * g


# --------------------------------------------------------------------------- augmentation

FILL_MODES = ("nearest", "constant")
MAX_VALUE = 255.0                       # colour changes clip to the pixel range 0..255
GRAY_WEIGHTS = (0.299, 0.587, 0.114)    # ITU-R 601 luma, as torchvision uses


def affine_warp(images, inverse, fill):
    """Bilinear resampling of each image at the source positions its affine map gives.

    images: (N, C, H, W) float; inverse: (N, 2, 3), output pixel (x, y, 1) -> source (x, y),
    x the column and y the row. fill 'nearest' clamps source positions to the image (edge
    pixels repeat, as Keras fills); 'constant' lets corners outside the image contribute 0.
    Positions and weights are computed in the images' dtype.
    """
    if fill not in FILL_MODES:
        raise ValueError(f"fill must be one of {', '.join(FILL_MODES)}, got {fill!r}")
    n, c, h, w = images.shape
    m = np.asarray(inverse, dtype=images.dtype)[:, :, :, None, None]   # (N, 2, 3, 1, 1)
    xs = np.arange(w, dtype=images.dtype)
    ys = np.arange(h, dtype=images.dtype)[:, None]
    src_x = m[:, 0, 0] * xs + m[:, 0, 1] * ys + m[:, 0, 2]             # (N, H, W)
    src_y = m[:, 1, 0] * xs + m[:, 1, 1] * ys + m[:, 1, 2]
    if fill == "nearest":
        src_x, src_y = np.clip(src_x, 0, w - 1), np.clip(src_y, 0, h - 1)
    x0, y0 = np.floor(src_x), np.floor(src_y)
    frac_x, frac_y = src_x - x0, src_y - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    flat = images.reshape(n, c, h * w)
    out = np.zeros_like(images)
    # the four corners in the order (top-left, top-right, bottom-left, bottom-right)
    for dy, weight_y in ((0, 1 - frac_y), (1, frac_y)):
        for dx, weight_x in ((0, 1 - frac_x), (1, frac_x)):
            xi, yi = x0 + dx, y0 + dy
            weight = weight_y * weight_x
            if fill == "constant":
                weight = weight * ((xi >= 0) & (xi < w) & (yi >= 0) & (yi < h))
            index = np.clip(yi, 0, h - 1) * w + np.clip(xi, 0, w - 1)   # (N, H, W) into the flat image
            corner = np.take_along_axis(flat, index.reshape(n, 1, h * w), axis=2)
            out += corner.reshape(n, c, h, w) * weight[:, None]
    return out


def _gray(images):
    """(N, 3, H, W) -> (N, 1, H, W) luma."""
    weights = np.asarray(GRAY_WEIGHTS, dtype=images.dtype)[:, None, None]
    return (images * weights).sum(axis=1, keepdims=True)


def adjust_colour(images, factors):
    """Brightness, then contrast, then saturation, clipping to 0..255 after each
    (torchvision's formulas). images: (N, 3, H, W) float in pixel units; factors: (N, 3),
    where 1 leaves a property unchanged.

        brightness  x * b
        contrast    m + c * (x - m), m the mean luma of the whole image
        saturation  g + s * (x - g), g the pixel's luma
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"colour changes need (N, 3, H, W) images, got shape {images.shape}")
    f = np.asarray(factors, dtype=images.dtype)[:, :, None, None, None]   # (N, 3, 1, 1, 1)
    out = np.clip(images * f[:, 0], 0, MAX_VALUE)
    mean = _gray(out).mean(axis=(1, 2, 3), keepdims=True)
    out = np.clip((out - mean) * f[:, 1] + mean, 0, MAX_VALUE)
    gray = _gray(out)
    return np.clip((out - gray) * f[:, 2] + gray, 0, MAX_VALUE)


def prepare_batch(images, labels, index, inverse, fill, factors, mean, std, dtype):
    """One batch of a uint8 set as the model takes it: rows `index` as float `dtype`, warped
    (affine_warp, when inverse is not None), colour-changed (adjust_colour, when factors is not
    None), then (x - mean) / std per channel (when mean is not None).

    images: (N, C, H, W) uint8; labels: (N,); index: (B,) ints; inverse: (B, 2, 3); factors:
    (B, 3); mean, std: (C,) -> (x (B, C, H, W) of dtype, y (B,) int64).
    """
    x = images[index].astype(dtype)
    if inverse is not None:
        x = affine_warp(x, inverse, fill)
    if factors is not None:
        x = adjust_colour(x, factors)
    if mean is not None:
        x = (x - np.asarray(mean, dtype)[:, None, None]) / np.asarray(std, dtype)[:, None, None]
    return x, labels[index].astype(np.int64, copy=False)


# --------------------------------------------------------------------------- arithmetic, shapes
# The glue ops (add, mul, sums, zero padding) and eval-mode batch norm's backward are kernels
# too, so that every number an op computes comes from a kernel set.

def add_forward(a, b):
    """a + b with NumPy broadcasting (residual connections)."""
    return a + b


def mul_forward(a, b):
    """a * b with NumPy broadcasting (SE channel scaling, masks)."""
    return a * b


def sum_to(x, shape, scale):
    """scale * x summed over the axes that broadcasting `shape` up to x.shape stretches -> shape.

    shape is right-aligned against x.shape, as in broadcasting: sum_to is broadcast_to's adjoint
    (the gradient of a broadcast operand, and sum / mean with keepdims).
    """
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(lead + k for k, n in enumerate(shape)
                                      if n == 1 and x.shape[lead + k] != 1)
    return (x.sum(axis=axes, keepdims=True) * scale).reshape(shape)


def broadcast_to(x, shape, scale):
    """scale * x repeated along the axes where it has size 1 (or is missing) -> shape."""
    return np.ascontiguousarray(np.broadcast_to(x * scale, shape))


def zero_pad2d_forward(x, pads):
    """x: (N, C, H, W) -> (N, C, H + top + bottom, W + left + right), zeros around."""
    top, bottom, left, right = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def zero_pad2d_backward(dy, pads):
    """dy: the padded shape -> dx: the inner (N, C, H, W) window of dy."""
    top, bottom, left, right = pads
    h, w = dy.shape[2] - top - bottom, dy.shape[3] - left - right
    return np.ascontiguousarray(dy[:, :, top:top + h, left:left + w])


def batch_norm_backward_eval(dy, x, gamma, running_mean, running_var, eps):
    """Gradients of eval-mode batch norm -> (dx, dgamma, dbeta).

    With fixed statistics y = gamma * xhat + beta, xhat = (x - running_mean) * rstd, so
    dx = dy * gamma * rstd, dgamma = sum(dy * xhat), dbeta = sum(dy) (sums over all but axis 1).
    """
    channel = (1, -1) + (1,) * (x.ndim - 2)
    axes = (0,) + tuple(range(2, x.ndim))
    rstd = 1 / np.sqrt(running_var + eps)
    xhat = (x - running_mean.reshape(channel)) * rstd.reshape(channel)
    return dy * (gamma * rstd).reshape(channel), (dy * xhat).sum(axis=axes), dy.sum(axis=axes)


def one_hot(labels, classes, dtype):
    """int labels (N,) -> (N, classes) of dtype: 1 at each row's label, 0 elsewhere."""
    out = np.zeros((len(labels), classes), dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


# --------------------------------------------------------------------------- fused pairs
# What a ReLU next to a batch norm computes, as one function (the backends fuse the pair into
# one pass: batchnorm.cu's PRE_RELU / POST_RELU). Each is written as the composition of the
# two layers above, so it is the specification of the fused kernels by construction.

def relu_batch_norm_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                                  unbiased):
    """batch_norm_forward_train(relu(x), ...): a ReLU followed by a batch norm -> (y, mean, rstd)."""
    return batch_norm_forward_train(relu_forward(x), gamma, beta, running_mean, running_var,
                                    momentum, eps, unbiased)


def relu_batch_norm_backward(dy, x, gamma, mean, rstd, dx_sums=False):
    """Gradients of batch_norm(relu(x)) -> (dx, dgamma, dbeta[, sums of dx]); x is the ReLU's
    input."""
    relu = relu_forward(x)
    dr, dgamma, dbeta = batch_norm_backward(dy, relu, gamma, mean, rstd)
    return _and_sums((relu_backward(dr, relu), dgamma, dbeta), dx_sums)


def batch_norm_relu_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                                  unbiased):
    """relu(batch_norm_forward_train(x, ...)): a batch norm followed by a ReLU -> (y, mean, rstd)."""
    y, mean, rstd = batch_norm_forward_train(x, gamma, beta, running_mean, running_var, momentum,
                                             eps, unbiased)
    return relu_forward(y), mean, rstd


def batch_norm_relu_backward(dy, y, x, gamma, mean, rstd, dx_sums=False):
    """Gradients of relu(batch_norm(x)) -> (dx, dgamma, dbeta[, sums of dx]); y is the pair's
    output."""
    return batch_norm_backward(relu_backward(dy, y), x, gamma, mean, rstd, dx_sums)


def dropout_apply(x, rate, seed, step):
    """x * the dropout mask of (seed, step): dropout's forward of x, and its backward of dy
    (the mask is recomputed rather than stored)."""
    return dropout_forward(x, rate, seed, step)[0]


def pool2d_dropout_forward(x, mode, kernel, stride, pads, rate, seed, step):
    """Pooling then dropout of its output -> (y, index): pool2d_forward's index."""
    y, index = pool2d_forward(x, mode, kernel, stride, pads)
    return dropout_apply(y, rate, seed, step), index


def pool2d_dropout_backward(dy, index, x_shape, mode, kernel, stride, pads, rate, seed, step):
    """Gradient of pooling then dropout: the pooling's backward of dy * mask."""
    return pool2d_backward(dropout_apply(dy, rate, seed, step), index, x_shape, mode, kernel,
                           stride, pads)


def batch_norm_relu_pool_forward_train(x, gamma, beta, running_mean, running_var, momentum, eps,
                                       unbiased, mode, kernel, stride, pads):
    """Batch norm, ReLU, then pooling -> (y, index, mean, rstd); index as pool2d_forward's."""
    relu, mean, rstd = batch_norm_relu_forward_train(x, gamma, beta, running_mean, running_var,
                                                     momentum, eps, unbiased)
    y, index = pool2d_forward(relu, mode, kernel, stride, pads)
    return y, index, mean, rstd


def batch_norm_relu_pool_backward(dy, index, x, gamma, beta, mean, rstd, mode, kernel, stride,
                                  pads, dx_sums=False):
    """Gradients of pool(relu(batch_norm(x))) -> (dx, dgamma, dbeta[, sums of dx]). The ReLU's
    output is recomputed from x, mean, rstd, gamma and beta (it is not kept)."""
    relu = relu_forward((x - _per_channel(mean, x)) * _per_channel(rstd * gamma, x)
                        + _per_channel(beta, x))
    drelu = pool2d_backward(dy, index, x.shape, mode, kernel, stride, pads)
    return batch_norm_relu_backward(drelu, relu, x, gamma, mean, rstd, dx_sums)


def relu_batch_norm_pool_dropout_forward_train(x, gamma, beta, running_mean, running_var,
                                               momentum, eps, unbiased, mode, kernel, stride, pads,
                                               rate, seed, step):
    """ReLU, batch norm, pooling, then dropout (vgg_like's order) -> (y, index, mean, rstd)."""
    z, mean, rstd = relu_batch_norm_forward_train(x, gamma, beta, running_mean, running_var,
                                                  momentum, eps, unbiased)
    y, index = pool2d_dropout_forward(z, mode, kernel, stride, pads, rate, seed, step)
    return y, index, mean, rstd


def relu_batch_norm_pool_dropout_backward(dy, index, x, gamma, beta, mean, rstd, mode, kernel,
                                          stride, pads, rate, seed, step, dx_sums=False):
    """Gradients of the four layers -> (dx, dgamma, dbeta[, sums of dx]); x: the ReLU's input
    (beta is not needed: the fused kernels take the forward's arguments)."""
    dz = pool2d_dropout_backward(dy, index, x.shape, mode, kernel, stride, pads, rate, seed, step)
    return relu_batch_norm_backward(dz, x, gamma, mean, rstd, dx_sums)


# --------------------------------------------------------------------------- conv -> ReLU
# A conv followed by a ReLU (the backends apply the bias and the ReLU in the product's
# epilogue), and the ReLU's backward with the channel sums of its result (the bias gradient of
# the layer before it) in one pass.

def conv2d_relu_forward(x, w, b, stride, pads):
    """relu(conv2d_forward(x, w, b, stride, pads)) -> y: (N, F, Ho, Wo)."""
    return relu_forward(conv2d_forward(x, w, b, stride, pads))


def relu_backward_bias_grad(dy, y):
    """(dx, db): dx = relu_backward(dy, y), db = bias_grad(dx). dy, y: (N, C, ...)."""
    dx = relu_backward(dy, y)
    return dx, bias_grad(dx)


# --------------------------------------------------------------------------- a layer's backward
# All the gradients of a conv or linear layer from one call (the CUDA backend computes them in
# one launch, backward.cu). relu_input: x is the output of a ReLU (nn/fusion.py's conv -> ReLU
# -> conv), whose backward is then applied to dx here.

def conv2d_backward(dy, x, w, stride, pads, need_dx, need_db, relu_input):
    """dy: (N, F, Ho, Wo), x: (N, C, H, W), w: (F, C, kH, kW) -> (dx or None, dw, db or None)."""
    return _conv2d_backward_chain(sys.modules[__name__], dy, x, w, stride, pads, need_dx, need_db,
                                  relu_input)


def linear_backward(dy, x, w, need_dx, need_db):
    """dy: (N, OUT), x: (N, IN), w: (OUT, IN) -> (dx or None, dw, db or None)."""
    return _linear_backward_chain(sys.modules[__name__], dy, x, w, need_dx, need_db)


def _conv2d_backward_chain(k, dy, x, w, stride, pads, need_dx, need_db, relu_input):
    """conv2d_backward from kernel set k's separate passes (the backends' unfused reference)."""
    dx = k.conv2d_backward_data(dy, w, x.shape, stride, pads) if need_dx else None
    if dx is not None and relu_input:
        dx = k.relu_backward(dx, x)
    dw = k.conv2d_backward_weight(dy, x, w.shape[2:], stride, pads)
    return dx, dw, k.bias_grad(dy) if need_db else None


def _linear_backward_chain(k, dy, x, w, need_dx, need_db):
    """linear_backward from kernel set k's separate passes."""
    dx = k.gemm(dy, w) if need_dx else None
    return dx, k.gemm(dy, x, trans_a=True), k.bias_grad(dy) if need_db else None
