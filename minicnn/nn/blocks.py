"""Blocks from the CNN tutorial (report E): residual blocks and squeeze-and-excitation."""
from minicnn import functional as F
from minicnn.nn.layers import BatchNorm2d, Conv2d, GlobalAvgPool2d, Linear, Sequential
from minicnn.nn.module import Module


class SEBlock(Module):
    """Squeeze-and-excitation (Hu et al. 2018): rescale each channel by a learned gate.

    x: (N, C, H, W) -> x * sigmoid(fc2(relu(fc1(gap(x)))))[:, :, None, None]
    """
    kind = "se"

    def __init__(self, channels, reduction=16, init="torch", name=None):
        super().__init__(name)
        hidden = max(channels // reduction, 1)
        self.gap = GlobalAvgPool2d()
        self.fc1 = Linear(channels, hidden, init=init)
        self.fc2 = Linear(hidden, channels, init=init)

    def forward(self, x):
        gate = F.sigmoid(self.fc2(F.relu(self.fc1(self.gap(x)))))
        return x * gate.reshape(gate.shape + (1, 1))


class ResidualBlock(Module):
    """He et al.'s basic block: two 3x3 convs and a shortcut, out = f(x) + shortcut(x).

    preact=False (ResNet v1, 2016a): conv-BN-ReLU-conv-BN, add, ReLU.
    preact=True  (ResNet v2, 2016b): BN-ReLU-conv-BN-ReLU-conv, add; nothing after the add,
                 so the identity path stays clean from block to block.
    When the stride or the channel count changes, the shortcut is a 1x1 conv (projection).
    se: a reduction ratio to put an SE block on the residual branch before the add (SE-ResNet).
    """
    kind = "block"

    def __init__(self, in_channels, out_channels, stride=1, preact=False, se=None, init="he_normal",
                 name=None):
        super().__init__(name)
        self.preact = preact
        if preact:
            self.bn1 = BatchNorm2d(in_channels)
        self.conv1 = Conv2d(in_channels, out_channels, 3, stride, 1, bias=False, init=init)
        if not preact:
            self.bn1 = BatchNorm2d(out_channels)
        self.bn2 = BatchNorm2d(out_channels)
        self.conv2 = Conv2d(out_channels, out_channels, 3, 1, 1, bias=False, init=init)
        self.se = SEBlock(out_channels, se, init=init) if se else None
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            projection = [Conv2d(in_channels, out_channels, 1, stride, 0, bias=False, init=init)]
            if not preact:
                projection.append(BatchNorm2d(out_channels))
            self.shortcut = Sequential(*projection)

    def forward(self, x):
        if self.preact:
            h = F.relu(self.bn1(x))  # a projection reads the pre-activated input (He et al. 2016b)
            out = self.conv2(F.relu(self.bn2(self.conv1(h))))
        else:
            h = x
            out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.se is not None:
            out = self.se(out)
        out = out + (x if self.shortcut is None else self.shortcut(h))
        return out if self.preact else F.relu(out)
