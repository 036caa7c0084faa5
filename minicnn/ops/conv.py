"""2-D convolution (cross-correlation, as every framework computes it)."""
from minicnn.autograd import Function
from minicnn.backends import checks
from minicnn.backends.checks import only_supported
from minicnn.ops.arguments import check_tensor, pair, resolve_padding


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1):
    """x: (N, C, H, W), w: (F, C, kH, kW), b: (F,) or None -> (N, F, Ho, Wo)."""
    check_tensor("conv2d", x)
    only_supported("conv2d", dilation=(dilation, 1), groups=(groups, 1))
    stride = pair("conv2d", "stride", stride)
    pads = resolve_padding("conv2d", padding, x.shape[2:], w.shape[2:], stride)
    inputs = (x, w) if b is None else (x, w, b)
    return Conv2d(stride, pads)(*inputs)


class Conv2d(Function):
    """x: (N, C, H, W), w: (F, C, kH, kW), b: (F,) -> (N, F, Ho, Wo).

    stride = (sh, sw), pads = (top, bottom, left, right): already resolved by conv2d.
    """

    def __init__(self, stride, pads):
        self.stride, self.pads = stride, pads

    def forward(self, x, w, b=None):
        self.x, self.w = x, w
        args = (x, w, b, self.stride, self.pads)
        checks.conv2d_forward(*args)  # the rule, beside its kernel: one validator, every device
        return self.kernels.conv2d_forward(*args)

    def backward(self, dy):
        k = self.kernels
        dx = (k.conv2d_backward_data(dy, self.w, self.x.shape, self.stride, self.pads)
              if self.needs_grad[0] else None)  # the network's input rarely needs a gradient
        dw = k.conv2d_backward_weight(dy, self.x, self.w.shape[2:], self.stride, self.pads)
        return (dx, dw, k.bias_grad(dy)) if len(self.needs_grad) == 3 else (dx, dw)
