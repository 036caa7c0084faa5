"""2-D convolution (cross-correlation, as every framework computes it)."""
from minicnn.autograd import Function
from minicnn.backends import checks
from minicnn.backends.checks import only_supported
from minicnn.ops.arguments import check_tensor, pair, resolve_padding
from minicnn.ops.norm import TakesBiasGrad


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, relu=False):
    """x: (N, C, H, W), w: (F, C, kH, kW), b: (F,) or None -> (N, F, Ho, Wo).

    relu=True returns relu(conv2d(...)) from one fused Function (Conv2dReLU, which nn.Sequential's
    fusion pass uses: minicnn/nn/fusion.py)."""
    check_tensor("conv2d", x)
    only_supported("conv2d", dilation=(dilation, 1), groups=(groups, 1))
    stride = pair("conv2d", "stride", stride)
    pads = resolve_padding("conv2d", padding, x.shape[2:], w.shape[2:], stride)
    inputs = (x, w) if b is None else (x, w, b)
    return (Conv2dReLU if relu else Conv2d)(stride, pads)(*inputs)


class Conv2d(TakesBiasGrad, Function):
    """x: (N, C, H, W), w: (F, C, kH, kW), b: (F,) -> (N, F, Ho, Wo).

    stride = (sh, sw), pads = (top, bottom, left, right): already resolved by conv2d.
    """

    def __init__(self, stride, pads):
        self.stride, self.pads = stride, pads

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        args = (x, w, b, self.stride, self.pads)
        checks.conv2d_forward(*args)  # the rule, beside its kernel: one validator, every device
        if not self.backward_wants_dx():
            return self.kernels.conv2d_forward(*args)
        y, self.wt = self.kernels.conv2d_forward_train(*args)
        return y

    # What a training forward kept for the backward's dx (kernels.conv2d_forward_train): the
    # CUDA kernels' transposed weights, written by the forward's own launch.
    wt = None

    def backward_wants_dx(self) -> bool:
        """The backward will compute dx: then the forward runs its kernel's _train twin, which
        also keeps wt (never in eval or under no_grad, nor for a network's input)."""
        return self.records and self.needs_grad[0]

    # x is the output of a ReLU whose backward this conv's dx applies (nn/fusion.py's conv ->
    # ReLU -> conv: the ReLU's Conv2dReLU then receives its gradient already masked).
    relu_input = False

    def backward(self, dy):
        return self._gradients(dy, self.given_bias_grad)

    def _gradients(self, dy, db):
        """(dx, dw[, db]) from the gradient dy of the product's output: one kernel call for
        them all (the bias gradient too unless db is given)."""
        has_bias = len(self.needs_grad) == 3
        # the network's input rarely needs a gradient
        dx, dw, summed = self.kernels.conv2d_backward(dy, self.x, self.w, self.stride, self.pads,
                                                      self.needs_grad[0], has_bias and db is None,
                                                      self.relu_input, self.wt)
        return (dx, dw, summed if db is None else db) if has_bias else (dx, dw)


class Conv2dReLU(Conv2d):
    """relu(conv2d(x, w, b)) in one Function: the bias and the ReLU are the product's epilogue
    (kernels.conv2d_relu_forward), and the backward's first pass gives both the gradient
    below the ReLU and its channel sums, the bias gradient (kernels.relu_backward_bias_grad),
    unless the conv fed by this output applied the ReLU's backward (grad_masked_below): then the
    backward is conv2d_backward alone. The same numbers as Conv2d then ReLU; the map before
    the ReLU is never stored."""

    grad_masked_below = False

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        args = (x, w, b, self.stride, self.pads)
        checks.conv2d_relu_forward(*args)
        if self.backward_wants_dx():
            self.y, self.wt = self.kernels.conv2d_relu_forward_train(*args)
        else:
            self.y = self.kernels.conv2d_relu_forward(*args)
        return self.y

    def backward(self, dy):
        if self.grad_masked_below:
            return self._gradients(dy, None)
        dy, db = self.kernels.relu_backward_bias_grad(dy, self.y)
        return self._gradients(dy, db)
