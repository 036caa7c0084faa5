"""Layers and containers (`from minicnn import nn`), named like PyTorch's torch.nn."""
from minicnn.nn import init
from minicnn.nn.blocks import ResidualBlock, SEBlock
from minicnn.nn.layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten,
                               GlobalAvgPool2d, Linear, MaxPool2d, MinPool2d, ReLU, Sequential,
                               Sigmoid, Softmax, ZeroPad2d)
from minicnn.nn.module import Module, Parameter, capture

__all__ = ["init", "Module", "Parameter", "capture", "Conv2d", "Linear", "BatchNorm1d",
           "BatchNorm2d", "Dropout", "ReLU", "Sigmoid", "Softmax", "MaxPool2d", "AvgPool2d",
           "MinPool2d", "GlobalAvgPool2d", "Flatten", "ZeroPad2d", "Sequential", "ResidualBlock",
           "SEBlock"]
