"""The CUDA backend: numpy_ref's functions, each computed by our own kernels in kernels/*.cu.

    kernels = CudaKernels(CupyRuntime())        # on a GPU (xp = cupy)
    kernels = CudaKernels(EmulatorRuntime())    # the same kernels on the CPU emulator (xp = numpy)
    y = kernels.conv2d_forward(x, w, b, (1, 1), (1, 1, 1, 1))

Every public function of numpy_ref has a method here with the same name and signature
(tests/test_kernels_api.py checks the signatures, tests/test_kernels_emu.py the numbers), so ops call `device.kernels.<name>` and never ask
which device they run on. Methods take and return arrays of runtime.xp, float32 or float64;
the xp module is used only for allocation and views: every computation is a kernel launch.
Launch geometry (grids, split-K, reduction slices) depends on shapes only, never on the GPU,
so results are bitwise reproducible. Argument rules are not checked here but in
minicnn/backends/checks.py, which the ops run before numpy_ref's kernels and these alike.
"""
from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

from minicnn.backends.cuda_launch import (FILL_MODES, POOL_MODES, KernelLauncher, cdiv,
                                          conv_output_size, i32, uint64)
from minicnn.backends.cuda_backward import BackwardLaunches
from minicnn.backends.cuda_fused import FusedLaunches
from minicnn.backends.cuda_norm import BatchNormLaunches
from minicnn.backends.cuda_optim import MultiTensorSteps
from minicnn.backends.kernel_facts import (ConvShape, conv_kernel, conv_taps, gemm_kernel,
                                          gemm_twin, split_k_kernel, weight_transpose_launch)
from minicnn.backends.cupy_runtime import CupyRuntime, KernelCompileError  # noqa: F401 (API)


class CudaKernels(BackwardLaunches, BatchNormLaunches, FusedLaunches, KernelLauncher):
    """numpy_ref's functions computed by the kernels in kernels/*.cu, launched by `runtime`."""

    def __repr__(self) -> str:
        return f"CudaKernels({self.runtime.name})"

    # ------------------------------------------------------------------ GEMM, linear

    def gemm(self, a, b, trans_a=False, trans_b=False):
        """op(a) @ op(b), where op transposes when asked. a, b: 2-D."""
        return self._gemm(a, b, trans_a, trans_b, version=2)

    def _gemm(self, a, b, trans_a, trans_b, version):
        """version 1: gemm_v1 (naive); 2: the tiled kernel of self.precision (gemm_v2 for fp32
        and float64, gemm_v3 on tensor cores for tf32 / bf16)."""
        a, b = self._float_arrays(a, b)
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"gemm takes 2-D arrays, got shapes {a.shape} and {b.shape}")
        m, k = a.shape[::-1] if trans_a else a.shape
        k_b, n = b.shape[::-1] if trans_b else b.shape
        if k != k_b:
            raise ValueError(f"gemm: inner sizes differ ({k} vs {k_b}) for shapes {a.shape}, "
                             f"{b.shape} with trans_a={trans_a}, trans_b={trans_b}")
        if version == 2:
            precision = self._product_precision(a.dtype)
            return self._split_k_product("gemm.cu", gemm_kernel(precision, trans_a, trans_b),
                                         a.dtype, m, n, k, a, b, *i32(m, n, k),
                                         one_launch=split_k_kernel(precision, trans_a,
                                                                   trans_b))
        name = f"gemm_v1<{{T}}, {str(bool(trans_a)).lower()}, {str(bool(trans_b)).lower()}>"
        c = self.xp.empty((m, n), a.dtype)
        if c.size:
            self._kernel("gemm.cu", name, a.dtype)((cdiv(n, 16), cdiv(m, 16)), (16, 16),
                                                   (c, a, b, *i32(m, n, k)))
        return c

    # A linear layer's bias added in its GEMM's epilogue (gemm_bias) when K is not split;
    # False: always a second launch, add_bias (the same bits either way).
    linear_bias_in_epilogue = True

    def linear_forward(self, x, w, b):
        """x: (N, IN), w: (OUT, IN), b: (OUT,) or None -> y: (N, OUT) = x @ w.T + b."""
        n, k, out = x.shape[0], x.shape[-1], w.shape[0]
        precision = self._product_precision(x.dtype)
        if b is not None and self.linear_bias_in_epilogue and x.ndim == w.ndim == 2 \
                and w.shape[1] == k and self.products[precision].split(n, out, k)[0] == 1:
            x, w, b = self._float_arrays(x, w, b)
            y = self.xp.empty((n, out), x.dtype)
            if y.size:
                self._tiled_launch("gemm.cu", gemm_twin("gemm_bias", precision, False, True),
                                   x.dtype, n, out, (y, x, w, b, *i32(n, out, k)))
            return y
        y = self.gemm(x, w, trans_b=True)
        if b is not None:
            (b,) = self._float_arrays(b)
            self._launch("elementwise.cu", "add_bias<{T}>", y.dtype, y.size, y, b,
                         *i32(y.size, y.shape[1], 1))
        return y

    def bias_grad(self, dy):
        """Sum of dy over every axis except 1 (channels / features): dy (N, F, ...) -> (F,)."""
        (dy,) = self._float_arrays(dy)
        return self._channel_sum(dy, dy.shape[0], dy.shape[1], math.prod(dy.shape[2:]))

    # ------------------------------------------------------------------ convolution

    def _conv_shape(self, x_shape, w_shape, stride, pads) -> ConvShape:
        """The sizes conv.cu's kernels take, checked: x (N, C, H, W), w (F, C, kH, kW)."""
        n, c, h, w = x_shape
        f, c_w, kh, kw = w_shape
        if c != c_w:
            raise ValueError(f"conv: input has {c} channels but the weights expect {c_w}")
        (sh, sw), (pt, pb, pl, pr) = stride, pads
        ho, wo = conv_output_size(h, kh, sh, pt, pb), conv_output_size(w, kw, sw, pl, pr)
        return ConvShape(n, c, h, w, f, kh, kw, sh, sw, pt, pl, ho, wo)

    def _taps(self, s: ConvShape, of_x: bool):
        """conv_taps of this layer shape on the device, built once per shape."""
        key = (dataclasses.replace(s, N=1), of_x)  # the taps do not depend on the batch
        if key not in self._conv_taps:
            self._conv_taps[key] = self.xp.asarray(conv_taps(s, of_x))
        return self._conv_taps[key]

    def conv2d_forward(self, x, w, b, stride, pads):
        """x: (N, C, H, W), w: (F, C, kH, kW), b: (F,) or None -> y: (N, F, Ho, Wo)."""
        x, s, args = self._conv_forward_args(x, w, b, stride, pads)
        # the product W (F x C*kH*kW) @ X_col (C*kH*kW x N*Ho*Wo), stored as (N, F, Ho, Wo),
        # split along K when the grid is small (the twin's last blocks, or sum_splits, add the slices)
        tile_kernel = functools.partial(conv_kernel, "conv2d_forward")  # instantiated per tile shape
        return self._split_k_product("conv.cu", tile_kernel, x.dtype, s.F, s.N * s.Ho * s.Wo, s.patch,
                                     *args, shape=s.y_shape,
                                     one_launch=functools.partial(conv_kernel, "conv2d_forward_split_k"))

    def _conv_forward_args(self, x, w, b, stride, pads):
        """(x, its ConvShape, the forward kernels' arguments after the output)."""
        x, w = self._float_arrays(x, w)
        s = self._conv_shape(x.shape, w.shape, stride, pads)
        bias = self._zeros(s.F, x.dtype) if b is None else self._float_arrays(b, x)[0]
        return x, s, (x, w, bias, self._taps(s, True), *i32(*s.ints()))

    def conv2d_backward_data(self, dy, w, x_shape, stride, pads):
        """dy: (N, F, Ho, Wo), w: (F, C, kH, kW) -> dx: x_shape (N, C, H, W)."""
        dy, w = self._float_arrays(dy, w)
        s = self._conv_shape(x_shape, w.shape, stride, pads)
        # the product W^T (C x F*kH*kW) @ dY_col (F*kH*kW x N*H*W), stored as (N, C, H, W);
        # W^T read from a transposed copy, whose rows are contiguous (coalesced loads)
        tile_kernel = functools.partial(conv_kernel, "conv2d_backward_data")  # instantiated per tile shape
        return self._split_k_product("conv.cu", tile_kernel, dy.dtype, s.C,
                                     s.N * s.H * s.W, s.F * s.kh * s.kw, dy, self._conv_weight_transpose(w),
                                     self._taps(s, False),
                                     *i32(*s.ints()), shape=s.x_shape,
                                     one_launch=functools.partial(conv_kernel, "conv2d_backward_data_split_k"))

    def _conv_weight_transpose(self, w):
        """w: (F, C, kH, kW) -> wt: (C, F, kH, kW), backward-data's W^T as a row-major C x
        (F*kH*kW) matrix (conv.cu's conv_weight_transpose)."""
        f, c, kh, kw = w.shape
        wt = self.xp.empty((c, f, kh, kw), w.dtype)
        if wt.size:
            grid, block, tile = weight_transpose_launch(f, c, kh * kw, self.kernels_dir)
            self._kernel("conv.cu", "conv_weight_transpose<{T}>", w.dtype)(
                grid, block, (wt, w, *i32(f, c, kh * kw, *tile)))
        return wt

    def conv2d_backward_weight(self, dy, x, kernel, stride, pads):
        """dy: (N, F, Ho, Wo), x: (N, C, H, W), kernel = (kH, kW) -> dw: (F, C, kH, kW)."""
        dy, x = self._float_arrays(dy, x)
        f, (kh, kw) = dy.shape[1], kernel
        s = self._conv_shape(x.shape, (f, x.shape[1], kh, kw), stride, pads)
        tile_kernel = functools.partial(conv_kernel, "conv2d_backward_weight")  # instantiated per tile shape
        return self._split_k_product("conv.cu", tile_kernel, x.dtype, f,
                                     s.patch, s.N * s.Ho * s.Wo, dy, x, self._taps(s, True),
                                     *i32(*s.ints()), shape=(f, s.C, kh, kw),
                                     one_launch=functools.partial(conv_kernel, "conv2d_backward_weight_split_k"))

    # ------------------------------------------------------------------ pooling

    def pool2d_forward(self, x, mode, kernel, stride, pads):
        """x: (N, C, H, W) -> (y: (N, C, Ho, Wo), index: int32 (N, C, Ho, Wo) or None for avg)."""
        (x,) = self._float_arrays(x)
        code, geometry, (ho, wo) = self._pool_geometry(x.shape, mode, kernel, stride, pads)
        n, c = x.shape[:2]
        y = self.xp.empty((n, c, ho, wo), x.dtype)
        index = self.xp.empty(y.shape if mode != "avg" else (1,), np.int32)
        self._launch("pool.cu", "pool2d_forward<{T}>", x.dtype, y.size, y, index, x,
                     *i32(code, *geometry))
        return y, (index if mode != "avg" else None)

    def pool2d_backward(self, dy, index, x_shape, mode, kernel, stride, pads):
        """dy: (N, C, Ho, Wo) -> dx: x_shape. index: from pool2d_forward (None for avg)."""
        (dy,) = self._float_arrays(dy)
        code, geometry, _ = self._pool_geometry(x_shape, mode, kernel, stride, pads)
        index = self.xp.empty(1, np.int32) if index is None else self._array(index, np.int32)
        dx = self.xp.empty(tuple(x_shape), dy.dtype)
        self._launch("pool.cu", "pool2d_backward<{T}>", dy.dtype, dx.size, dx, dy, index,
                     *i32(code, *geometry))
        return dx

    @staticmethod
    def _pool_geometry(x_shape, mode, kernel, stride, pads):
        """(mode code, (NC, H, W, kH, kW, sh, sw, pt, pl, Ho, Wo), (Ho, Wo)) for pool.cu."""
        n, c, h, w = x_shape
        (kh, kw), (sh, sw), (pt, pb, pl, pr) = kernel, stride, pads
        ho, wo = conv_output_size(h, kh, sh, pt, pb), conv_output_size(w, kw, sw, pl, pr)
        return POOL_MODES[mode], (n * c, h, w, kh, kw, sh, sw, pt, pl, ho, wo), (ho, wo)

    def global_avg_pool_forward(self, x):
        """x: (N, C, H, W) -> (N, C), the mean of each channel's map."""
        (x,) = self._float_arrays(x)
        n, c, h, w = x.shape
        return self._channel_sum(x, 1, n * c, h * w, divisor=h * w).reshape(n, c)

    def global_avg_pool_backward(self, dy, x_shape):
        """dy: (N, C) -> dx: (N, C, H, W), each cell receiving dy / (H * W)."""
        (dy,) = self._float_arrays(dy)
        dx = self.xp.empty(tuple(x_shape), dy.dtype)
        self._launch("elementwise.cu", "global_avg_pool_backward<{T}>", dy.dtype, dx.size, dx, dy,
                     *i32(dx.size, x_shape[2] * x_shape[3]))
        return dx

    # ------------------------------------------------------------------ batch norm

    def batch_norm_forward_eval(self, x, gamma, beta, running_mean, running_var, eps):
        """Normalize with the running statistics (inference): an affine map per channel."""
        x, gamma, beta, running_mean, running_var = self._float_arrays(
            x, gamma, beta, running_mean, running_var)
        _, c, s, _ = self._bn_view(x)
        y = self.xp.empty_like(x)
        self._launch("batchnorm.cu", "bn_eval<{T}>", x.dtype, x.size, y, x, gamma, beta,
                     running_mean, running_var, x.dtype.type(eps), *i32(x.size, c, s))
        return y

    # ------------------------------------------------------------------ activations

    def _map(self, expression, *inputs):
        """out = kernel(*inputs) elementwise, in the inputs' dtype and shape."""
        inputs = self._float_arrays(*inputs)
        out = self.xp.empty_like(inputs[0])
        self._launch("elementwise.cu", expression, out.dtype, out.size, out, *inputs,
                     *i32(out.size))
        return out

    def relu_forward(self, x):
        return self._map("relu_forward<{T}>", x)

    def relu_backward(self, dy, y):
        """Uses the output y: the gradient passes where y > 0."""
        return self._map("relu_backward<{T}>", dy, y)

    def sigmoid_forward(self, x):
        return self._map("sigmoid_forward<{T}>", x)

    def sigmoid_backward(self, dy, y):
        return self._map("sigmoid_backward<{T}>", dy, y)

    def _rows(self, expression, *inputs):
        """softmax.cu's row kernels: one warp per row of (N, K) inputs."""
        inputs = self._float_arrays(*inputs)
        out = self.xp.empty_like(inputs[0])
        n, k = out.shape
        self._launch_rows(expression, out.dtype, n, out, *inputs, *i32(n, k))
        return out

    def softmax_forward(self, x):
        """x: (N, K) -> probabilities along axis 1."""
        return self._rows("softmax_forward<{T}>", x)

    def softmax_backward(self, dy, y):
        return self._rows("softmax_backward<{T}>", dy, y)

    def log_softmax_forward(self, x):
        return self._rows("log_softmax_forward<{T}>", x)

    def log_softmax_backward(self, dy, y):
        return self._rows("log_softmax_backward<{T}>", dy, y)

    # ------------------------------------------------------------------ loss

    def _target(self, target, dtype):
        """('labels', int64 (N,)) or ('soft', (N, K) in the logits' dtype)."""
        if target.ndim == 1:
            return "labels", self._array(target, np.int64)
        return "soft", self._array(target, dtype)

    # The loss and its batch mean in one launch (softmax.cu version 2), which in training also
    # writes the gradient for dloss = 1; False: version 1, the mean in a second launch
    # (sum_partials) and the gradient in a third (the same bits either way).
    loss_in_one_launch = True

    def cross_entropy_forward(self, logits, target):
        """Fused log-softmax + negative log-likelihood, mean over the batch.

        logits: (N, K); target: int labels (N,) or probabilities (N, K). Returns (loss: 0-d
        array, probs: (N, K)). A label outside [0, K) gives an infinite loss.
        """
        return self._cross_entropy(logits, target, with_grad=False)

    def cross_entropy_forward_train(self, logits, target):
        """cross_entropy_forward and the gradient for dloss = 1 -> (loss, probs, dlogits (N, K))."""
        return self._cross_entropy(logits, target, with_grad=True)

    def _cross_entropy(self, logits, target, with_grad):
        (logits,) = self._float_arrays(logits)
        kind, target = self._target(target, logits.dtype)
        n, k = logits.shape
        probs, row_loss = self.xp.empty_like(logits), self.xp.empty(n, logits.dtype)
        if not self.loss_in_one_launch:
            self._launch_rows(f"cross_entropy_forward_{kind}<{{T}}>", logits.dtype, n, probs,
                              row_loss, logits, target, *i32(n, k))
            loss = self._sum_partials(row_loss.reshape(1, n), divisor=n, source="softmax.cu")
            one = self._one(logits.dtype)
            grad = (self.cross_entropy_backward(one, probs, target),) if with_grad else ()
            return (loss.reshape(()), probs, *grad)
        loss = self.xp.empty((), logits.dtype)
        dlogits = self.xp.empty_like(logits) if with_grad else probs  # probs: never written
        # at least one block, so that an empty batch's loss is 0 / 0 as with sum_partials
        self._launch_rows(f"cross_entropy_mean_{kind}<{{T}}>", logits.dtype, max(n, 1), loss,
                          probs, dlogits, row_loss, self._arrivals(1), logits, target,
                          *i32(n, k, with_grad))
        return (loss, probs, dlogits) if with_grad else (loss, probs)

    def cross_entropy_backward(self, dloss, probs, target):
        """d loss / d logits = dloss * (probs - target) / N, target as in the forward."""
        (probs,) = self._float_arrays(probs)
        kind, target = self._target(target, probs.dtype)
        dloss = self._array(dloss, probs.dtype).reshape(1)
        dlogits = self.xp.empty_like(probs)
        self._launch("softmax.cu", f"cross_entropy_backward_{kind}<{{T}}>", probs.dtype,
                     probs.size, dlogits, probs, dloss, target, *i32(*probs.shape))
        return dlogits

    # ------------------------------------------------------------------ dropout

    def philox4x32(self, counter_lo, counter_hi, step, seed):
        """Philox-4x32-10: the 4 random words (uint64 arrays of 32-bit values) per counter."""
        lo, hi = self._array(counter_lo, np.uint64), self._array(counter_hi, np.uint64)
        words = self.xp.empty((4,) + lo.shape, np.uint64)
        self._launch("elementwise.cu", "philox_words", None, lo.size, words, lo, hi,
                     *i32(lo.size), *uint64(step, seed))
        return list(words)

    def dropout_forward(self, x, rate, seed, step):
        """Inverted dropout with a Philox mask bit-identical to numpy_ref's. Returns (y, mask)."""
        (x,) = self._float_arrays(x)
        y, mask = self.xp.empty_like(x), self.xp.empty_like(x)
        self._launch("elementwise.cu", "dropout_forward<{T}>", x.dtype, cdiv(x.size, 4), y, mask,
                     x, *i32(x.size), np.float64(rate), *uint64(seed, step))
        return y, mask

    def dropout_backward(self, dy, mask):
        return self._map("multiply<{T}>", dy, mask)

    # ------------------------------------------------------------------ optimizers

    # Adam's step advanced inside its update launch (optim.cu version 3); False: optim_advance
    # first, in a launch of its own (the same bits).
    adam_advance_in_update = True

    def adam_update(self, params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2, eps,
                    weight_decay, decoupled):
        """One Adam step on lists of arrays, in place: one launch for all of them (optim.cu
        version 2, bit-identical to the per-tensor _adam_update_v1)."""
        if params:
            self._in_place(*params, *exp_avgs, *exp_avg_sqs)
            grads = self._float_arrays(*grads, *params)[:len(grads)]
            self._multi_tensor.adam(params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2,
                                    eps, weight_decay, decoupled)

    def sgd_update(self, params, grads, velocities, lr, momentum, nesterov, weight_decay):
        """One SGD step in place (v = momentum * v + g; p -= lr * v, or Nesterov's form), one
        launch for all tensors (bit-identical to the per-tensor _sgd_update_v1)."""
        velocities = velocities if momentum else params  # the kernel leaves v alone then
        if params:
            self._in_place(*params, *velocities)
            grads = self._float_arrays(*grads, *params)[:len(grads)]
            self._multi_tensor.sgd(params, grads, velocities, lr, momentum, nesterov,
                                   weight_decay)

    @functools.cached_property
    def _multi_tensor(self):
        return MultiTensorSteps(self)

    def _adam_update_v1(self, params, grads, exp_avgs, exp_avg_sqs, step, lr, beta1, beta2,
                        eps, weight_decay, decoupled):
        """Version 1 of adam_update: one fused launch per parameter tensor."""
        correction1, correction2 = 1 - beta1 ** step, 1 - beta2 ** step
        for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
            T = self._in_place(p, m, v).type
            (g,) = self._float_arrays(g)
            self._launch("optim.cu", "adam_update<{T}>", p.dtype, p.size, p, m, v, g,
                         *i32(p.size), T(lr), T(beta1), T(beta2), T(eps), T(weight_decay),
                         *i32(bool(decoupled)), T(correction1), T(correction2))

    def _sgd_update_v1(self, params, grads, velocities, lr, momentum, nesterov, weight_decay):
        """Version 1 of sgd_update: one launch per parameter tensor."""
        for i, (p, g) in enumerate(zip(params, grads)):
            v = velocities[i] if momentum else p  # the kernel leaves v alone without momentum
            T = self._in_place(p, v).type
            (g,) = self._float_arrays(g)
            self._launch("optim.cu", "sgd_update<{T}>", p.dtype, p.size, p, v, g, *i32(p.size),
                         T(lr), T(momentum), *i32(bool(nesterov)), T(weight_decay))

    # ------------------------------------------------------------------ augmentation

    def affine_warp(self, images, inverse, fill):
        """Bilinear warp of each image by its inverse map: images (N, C, H, W), inverse (N, 2, 3)
        (cast to the images' dtype), fill 'nearest' | 'constant' -> (N, C, H, W)."""
        (images,) = self._float_arrays(images)
        n, c, h, w = images.shape
        inverse = self._array(inverse, images.dtype)
        out = self.xp.empty_like(images)
        self._launch("augment.cu", "affine_warp<{T}>", images.dtype, n * h * w, out, images,
                     inverse, *i32(n, c, h, w, FILL_MODES[fill]))
        return out

    def adjust_colour(self, images, factors):
        """Brightness, contrast, saturation: images (N, 3, H, W) in pixel units, factors (N, 3)
        (cast to the images' dtype) -> (N, 3, H, W) clipped to [0, 255]."""
        return self._adjust_colour(*self._float_arrays(images), factors, None, None)

    def _adjust_colour(self, images, factors, mean, std):
        """adjust_colour, then (x - mean) / std per channel when mean is not None."""
        n, _, h, w = images.shape
        factors = self._array(factors, images.dtype)
        # the images are the "channels" of reduce.cu's (1, C, S) view: one mean per image
        mean_luma = self._sum_partials(self._channel_partials(
            "augment.cu", "brightness_luma_partial_sums<{T}>", images.dtype, 1, n, h * w, images,
            factors), divisor=h * w)
        out = self.xp.empty_like(images)
        mean, std, normalize = self._normalizer(mean, std, images.dtype)
        self._launch("augment.cu", "adjust_colour<{T}>", images.dtype, n * h * w, out, images,
                     factors, mean_luma, mean, std, *i32(n, h * w, normalize))
        return out

    def prepare_batch(self, images, labels, index, inverse, fill, factors, mean, std, dtype):
        """A batch of the uint8 set, made on the device: images (N, C, H, W) uint8, labels (N,)
        int64, index (B,) the rows to take; inverse (B, 2, 3) or None, fill as affine_warp;
        factors (B, 3) or None as adjust_colour; mean, std (C,) or None: (x - mean) / std per
        channel last -> (x (B, C, H, W) of dtype, y (B,) int64). One launch (prepare_batch);
        with colour changes, whose contrast needs each image's mean luma first, adjust_colour's
        three launches follow, the last one normalizing."""
        dtype = np.dtype(dtype)
        images = self._array(images)
        labels, index = self._array(labels, np.int64), self._array(index, np.int64)
        b, (c, h, w) = index.shape[0], images.shape[1:]
        out, y = self.xp.empty((b, c, h, w), dtype), self.xp.empty(b, np.int64)
        warp = inverse is not None
        inverse = self._array(inverse, dtype) if warp else self._zeros(1, dtype)
        last = factors is None  # else the colour kernel normalizes, after its changes
        scale = self._normalizer(mean if last else None, std, dtype)
        self._launch("augment.cu", "prepare_batch<{T}>", dtype, b * h * w, out, y, images, labels,
                     index, inverse, *scale[:2], *i32(b, c, h, w, warp, FILL_MODES[fill], scale[2]))
        return (out if last else self._adjust_colour(out, factors, mean, std)), y

    def _normalizer(self, mean, std, dtype):
        """(mean, std, 1) as arrays of dtype for a kernel's normalized(), or unused stand-ins
        and 0 when mean is None."""
        if mean is None:
            unused = self._zeros(1, dtype)
            return unused, unused, 0
        return self._array(mean, dtype), self._array(std, dtype), 1

    # ------------------------------------------------------------------ arithmetic, shapes

    def _broadcast(self, expression, a, b):
        """shape.cu's broadcasting map of a and b (add or multiply)."""
        a, b = self._float_arrays(a, b)
        out = self.xp.empty(np.broadcast_shapes(a.shape, b.shape), a.dtype)
        dims, masks = broadcast_geometry(out.shape, a.shape, b.shape)
        self._launch("shape.cu", expression, a.dtype, out.size, out, a, b,
                     *i32(out.size, *dims, *masks))
        return out

    def add_forward(self, a, b):
        """a + b with NumPy broadcasting (residual connections)."""
        return self._broadcast("broadcast_add<{T}>", a, b)

    def mul_forward(self, a, b):
        """a * b with NumPy broadcasting (SE channel scaling, masks)."""
        return self._broadcast("broadcast_mul<{T}>", a, b)

    def sum_to(self, x, shape, scale):
        """scale * x summed over the axes that broadcasting `shape` up to x.shape stretches."""
        return self._between_shapes("sum_to<{T}>", x, shape, scale, summing=True)

    def broadcast_to(self, x, shape, scale):
        """scale * x repeated along the axes where it has size 1 (or is missing) -> shape."""
        return self._between_shapes("broadcast_to<{T}>", x, shape, scale, summing=False)

    def _between_shapes(self, expression, x, shape, scale, summing):
        """shape.cu's sum_to (x is the large array) and broadcast_to (the output is)."""
        (x,) = self._float_arrays(x)
        out = self.xp.empty(tuple(shape), x.dtype)
        large, small = (x, out) if summing else (out, x)
        dims, (mask,) = broadcast_geometry(large.shape, small.shape)
        self._launch("shape.cu", expression, x.dtype, out.size, out, x,
                     *i32(out.size, *dims, mask), x.dtype.type(scale))
        return out

    def zero_pad2d_forward(self, x, pads):
        """x: (N, C, H, W) -> (N, C, H + top + bottom, W + left + right), zeros around."""
        return self._zero_pad2d("zero_pad2d_forward<{T}>", x, pads, grow=1)

    def zero_pad2d_backward(self, dy, pads):
        """dy: the padded shape -> dx: the inner (N, C, H, W) window of dy."""
        return self._zero_pad2d("zero_pad2d_backward<{T}>", dy, pads, grow=-1)

    def _zero_pad2d(self, expression, src, pads, grow):
        """shape.cu's padding kernels: grow=1 pads src, grow=-1 crops the border back off."""
        (src,) = self._float_arrays(src)
        top, bottom, left, right = pads
        n, c, h, w = src.shape
        out = self.xp.empty((n, c, h + grow * (top + bottom), w + grow * (left + right)), src.dtype)
        inner, padded = (src, out) if grow > 0 else (out, src)
        self._launch("shape.cu", expression, src.dtype, out.size, out, src,
                     *i32(out.size, *inner.shape[2:], top, left, *padded.shape[2:]))
        return out

    def batch_norm_backward_eval(self, dy, x, gamma, running_mean, running_var, eps):
        """Gradients of eval-mode batch norm (fixed statistics) -> (dx, dgamma, dbeta)."""
        dy, x, gamma, running_mean, running_var = self._float_arrays(
            dy, x, gamma, running_mean, running_var)
        n, c, s, _ = self._bn_view(x)
        dx, dy_xhat = self.xp.empty_like(x), self.xp.empty_like(x)
        self._launch("batchnorm.cu", "bn_eval_backward<{T}>", x.dtype, x.size, dx, dy_xhat, dy, x,
                     gamma, running_mean, running_var, x.dtype.type(eps), *i32(x.size, c, s))
        return dx, self._channel_sum(dy_xhat, n, c, s), self._channel_sum(dy, n, c, s)

    def one_hot(self, labels, classes, dtype):
        """int labels (N,) -> (N, classes) of dtype: 1 at each row's label, 0 elsewhere."""
        labels = self._array(labels, np.int64)
        out = self.xp.empty((labels.size, classes), dtype)
        self._launch("shape.cu", "one_hot<{T}>", dtype, out.size, out, labels, *i32(out.size, classes))
        return out


MAX_BROADCAST_DIMS = 4  # shape.cu's kernels index (d0, d1, d2, d3)


def broadcast_geometry(shape, *operand_shapes):
    """shape's axes, merged where every operand broadcasts alike, as shape.cu takes them.

    Operand shapes are right-aligned against `shape` (NumPy's rule). Returns (dims, masks):
    four dims (outermost first, padded with leading 1s) and per operand a bit mask with bit
    k set where the operand has size 1 along dims[k]. E.g. (2, 3, 4, 5) with (2, 3, 1, 1)
    becomes dims (1, 1, 6, 20) and mask 0b1000.
    """
    padded = [(1,) * (len(shape) - len(s)) + tuple(s) for s in operand_shapes]
    dims, kinds = [], []
    for k, size in enumerate(shape):
        if size == 1:
            continue  # nothing to index along a dim of 1
        kind = tuple(p[k] == 1 for p in padded)
        if kinds and kinds[-1] == kind:
            dims[-1] *= size
        else:
            dims.append(size)
            kinds.append(kind)
    if len(dims) > MAX_BROADCAST_DIMS:
        raise ValueError(f"broadcasting {', '.join(map(str, operand_shapes))} against {tuple(shape)} "
                         f"needs {len(dims)} dims after merging; the kernels take at most "
                         f"{MAX_BROADCAST_DIMS}")
    lead = MAX_BROADCAST_DIMS - len(dims)
    dims, kinds = [1] * lead + dims, [(False,) * len(padded)] * lead + kinds
    masks = [sum(1 << k for k, kind in enumerate(kinds) if kind[j]) for j in range(len(padded))]
    return dims, masks
