"""Softmax cross-entropy, fused: log-softmax and the negative log-likelihood in one op."""
from minicnn.autograd import Function


class CrossEntropy(Function):
    """logits: (N, K) -> scalar mean loss. target: int labels (N,) or probabilities (N, K).

    Fusing keeps backward to one line, probs - target, and avoids log(0) for confident nets.
    """

    def __init__(self, target):
        self.target = target

    def forward(self, logits):
        loss, self.probs = self.kernels.cross_entropy_forward(logits, self.target)
        return loss

    def backward(self, dloss):
        return self.kernels.cross_entropy_backward(dloss, self.probs, self.target)
