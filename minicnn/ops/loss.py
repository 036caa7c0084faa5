"""Softmax cross-entropy, fused: log-softmax and the negative log-likelihood in one op."""
from minicnn.autograd import Function, Tensor
from minicnn.backends import checks
from minicnn.backends.checks import only_supported
from minicnn.ops.activation import log_softmax
from minicnn.ops.arguments import check_tensor
from minicnn.ops.basic import mean, sum


def cross_entropy(logits, target, weight=None, ignore_index=-100, reduction="mean",
                  label_smoothing=0.0):
    """Softmax cross-entropy of logits (N, K); target: int labels (N,) or probabilities (N, K).

    reduction: 'mean' over the batch, 'sum', or 'none' (one loss per row, (N,)).
    label_smoothing e: the target becomes (1 - e) * target + e / K, PyTorch's rule.
    The plain mean is one fused kernel (the training loss); the other forms are built from
    ops (one-hot, log_softmax, mul, sum), so their backward comes from those ops.
    """
    check_tensor("cross_entropy", logits)
    only_supported("cross_entropy", weight=(weight, None), ignore_index=(ignore_index, -100))
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}")
    t = target.data if isinstance(target, Tensor) else logits.device.asarray(target)
    if t.dtype.kind == "f":  # probabilities are read in the logits' dtype
        t = t.astype(logits.dtype, copy=False)
    if reduction == "mean" and label_smoothing == 0:
        return CrossEntropy(t)(logits)
    checks.cross_entropy_forward(logits.data, t)
    classes = logits.shape[1]
    if t.ndim == 1:
        t = logits.device.kernels.one_hot(t, classes, logits.dtype)
    q = Tensor(t, logits.device)
    if label_smoothing:
        q = q * (1 - label_smoothing) + label_smoothing / classes
    rows = -sum(log_softmax(logits, dim=1) * q, dim=1)
    return rows if reduction == "none" else sum(rows) if reduction == "sum" else mean(rows)


class CrossEntropy(Function):
    """logits: (N, K) -> scalar mean loss. target: int labels (N,) or probabilities (N, K).

    Fusing keeps backward to one line, probs - target, and avoids log(0) for confident nets.
    When the graph is recorded (training), the forward also computes that gradient for the
    dloss = 1 loss.backward() seeds the graph with: the usual backward() then costs nothing
    (backward_from_seed); any other dloss (loss * 2, loss + other) runs the backward kernel.
    """

    def __init__(self, target):
        self.target = target

    def forward(self, logits):
        checks.cross_entropy_forward(logits, self.target)
        if not self.records:
            loss, self.probs = self.kernels.cross_entropy_forward(logits, self.target)
            return loss
        loss, self.probs, self.seed_grad = self.kernels.cross_entropy_forward_train(logits,
                                                                                    self.target)
        return loss

    def backward(self, dloss):
        return self.kernels.cross_entropy_backward(dloss, self.probs, self.target)

    def backward_from_seed(self):
        return self.seed_grad
