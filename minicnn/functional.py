"""The functional API (`from minicnn import functional as F`): every op's public function.

Names and layouts follow PyTorch's torch.nn.functional so people can move between the two.
Each function lives in minicnn/ops/ beside its Function (forward and backward) and its
argument parsing (the kernels' shape and dtype rules, which each forward runs, are in
minicnn/backends/checks.py); this module only gathers them under one name.
"""
from minicnn.ops.activation import dropout, log_softmax, relu, sigmoid, softmax
from minicnn.ops.basic import add, flatten, linear, mean, mul, reshape, sum, zero_pad2d
from minicnn.ops.conv import conv2d
from minicnn.ops.loss import cross_entropy
from minicnn.ops.norm import batch_norm
from minicnn.ops.pool import avg_pool2d, global_avg_pool2d, max_pool2d, min_pool2d

__all__ = ["add", "avg_pool2d", "batch_norm", "conv2d", "cross_entropy", "dropout", "flatten",
           "global_avg_pool2d", "linear", "log_softmax", "max_pool2d", "mean", "min_pool2d", "mul",
           "relu", "reshape", "sigmoid", "softmax", "sum", "zero_pad2d"]
