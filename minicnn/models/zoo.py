"""Every network of the reports (shared/docs/models.md) by name, with the recipe it was trained with.

A spec pairs an architecture (`build(num_classes) -> Module`) with its `Recipe`; `minicnn train
--arch NAME` uses the recipe as defaults that flags override. Report ids are aliases (A13 is
vgg_like). Layer order and conventions follow each report's framework exactly:

  Report A and C and D (Keras): glorot-uniform weights, zero biases, batch norm with Keras'
  momentum 0.99 / eps 1e-3 and biased running variance. In report A, BN sits *after* the ReLU
  and P is a 3x3/2 'same' max pool (32 -> 16 -> 8 -> 4 -> 2 -> 1).
  Report B (PyTorch style): PyTorch's default init and batch norm (momentum 0.1, eps 1e-5),
  conv -> BN -> ReLU, 3x3/2 pools without padding (32 -> 15 -> 7).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from minicnn import nn


@dataclass(frozen=True)
class Recipe:
    """How a report trained its network. Every field can be overridden from the command line."""
    dataset: str = "cifar10"            # "cifar10" | "cifar100"
    optimizer: str = "adam"             # "adam" | "sgd"
    lr: float = 1e-3
    betas: tuple = (0.9, 0.999)         # adam
    eps: float = 1e-8                   # adam (Keras' 1e-7 differs only in the 8th digit of the step)
    momentum: float = 0.9               # sgd
    nesterov: bool = False              # sgd
    weight_decay: float = 0.0           # L2 added to the gradient (Keras' kernel_regularizer style)
    lr_milestones: tuple = ()           # epochs after which lr *= lr_gamma
    lr_gamma: float = 0.1
    batch_size: int = 128
    epochs: int = 30
    augmentation: str = "none"          # a preset of minicnn.data.augment
    normalization: str = "scale"        # "raw" (0-255) | "scale" (/255) | "standardize" (per channel)
    split: str = "test-as-val"          # the test set doubles as validation; "holdout": 40k/10k/10k
    checkpoint: str = "best"            # keep the best validation accuracy; "improvements": also an
                                        # epoch-NNN snapshot each time it improves (report C's t-SNE
                                        # series); "every-epoch": a snapshot every epoch (report D)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    aliases: tuple
    report: str
    description: str
    build: Callable[[int], nn.Module] = field(repr=False)
    recipe: Recipe
    reported: str                       # the report's figure, as the report states it
    reported_accuracy: float | None     # the same as a fraction, where the report gives a number


# --------------------------------------------------------------------------- report A (Keras)

KERAS_BN = dict(momentum=0.99, eps=1e-3, convention="keras")
REPORT_A = Recipe(batch_size=512, epochs=300)


def _keras_cnn(filters, fc_hidden=None, bn=False, dropout=None, init="glorot_uniform",
               double=False, num_classes=10):
    """Report A's family: per stage C (C) [BN] P [D]; then Flatten [FC128 ReLU [BN] [D]] FC.

    BN follows the ReLU, as the report's Keras code placed it; P is 3x3/2 'same'.
    """
    layers, channels = [], 3
    for width in filters:
        for _ in range(2 if double else 1):
            layers += [nn.Conv2d(channels, width, 3, padding="same", init=init), nn.ReLU()]
            channels = width
        if bn:
            layers.append(nn.BatchNorm2d(width, **KERAS_BN))
        layers.append(nn.MaxPool2d(3, 2, "same"))
        if dropout:
            layers.append(nn.Dropout(dropout))
    size = 32 >> len(filters)
    layers.append(nn.Flatten())
    features = channels * size * size
    if fc_hidden:
        layers += [nn.Linear(features, fc_hidden, init=init), nn.ReLU()]
        if bn:
            layers.append(nn.BatchNorm1d(fc_hidden, **KERAS_BN))
        if dropout:
            layers.append(nn.Dropout(dropout))
        features = fc_hidden
    layers.append(nn.Linear(features, num_classes, init=init))
    return nn.Sequential(*layers)


def _report_a(rid, name, description, reported, accuracy, recipe=REPORT_A, **arch):
    return ModelSpec(name, (rid,), "A", description, lambda k=10: _keras_cnn(num_classes=k, **arch),
                     recipe, reported, accuracy)


A5 = [32, 64, 64, 64, 128]
SHIFT_FLIP = dict(augmentation="keras_shift_flip")

# --------------------------------------------------------------------------- report B (PyTorch)

REPORT_B = Recipe(batch_size=128, epochs=15, normalization="standardize", split="holdout")


def _vgg11(bn=False, dropout=None, num_classes=10):
    """VGG11 (config A) cut for 32x32: two 3x3/2 unpadded pools (32 -> 15 -> 7), GAP, 3 FCs."""
    layers, channels = [], 3
    for width in [64, 128, 256, 256, "P", 512, 512, 512, 512, "P"]:
        if width == "P":
            layers.append(nn.MaxPool2d(3, 2, 0))
            if dropout:
                layers.append(nn.Dropout(dropout))
            continue
        layers.append(nn.Conv2d(channels, width, 3, padding=1))
        if bn:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU())
        channels = width
    return nn.Sequential(*layers, nn.GlobalAvgPool2d(), nn.Linear(512, 1000), nn.ReLU(),
                         nn.Linear(1000, 512), nn.ReLU(), nn.Linear(512, num_classes))


# --------------------------------------------------------------------------- report C (Keras)

def _vgg8_bn(num_classes=10):
    """Report C's network, named as its code names the layers: conv1 .. conv8, fc1, output.
    Every conv is conv -> BN -> ReLU; P is a 2x2/2 max pool; the logits pass a final BN."""
    layers, channels = [], 3
    for stage, width in enumerate([32, 64, 128, 256]):
        for _ in range(2):
            layers += [nn.Conv2d(channels, width, 3, padding="same", init="glorot_uniform"),
                       nn.BatchNorm2d(width, **KERAS_BN), nn.ReLU()]
            channels = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(256 * 2 * 2, 512, init="glorot_uniform"),
                         nn.BatchNorm1d(512, **KERAS_BN), nn.ReLU(),
                         nn.Linear(512, num_classes, init="glorot_uniform", name="output"),
                         nn.BatchNorm1d(num_classes, **KERAS_BN))


# --------------------------------------------------------------------------- report D (tf.keras)

def _cifar100_cnn(num_classes=100):
    """Three stages of [C(a) BN ReLU ZeroPad1] [C20 BN ReLU ZeroPad1] x2, P2x2, D0.25, a = 128, 64, 32.
    The convs are 'valid' and the zero padding comes after the activation, as in the report."""
    layers, channels = [], 3
    for first in (128, 64, 32):
        for width in (first, 20, 20):
            layers += [nn.Conv2d(channels, width, 3, padding="valid", init="glorot_uniform"),
                       nn.BatchNorm2d(width, **KERAS_BN), nn.ReLU(), nn.ZeroPad2d(1)]
            channels = width
        layers += [nn.MaxPool2d(2), nn.Dropout(0.25)]
    return nn.Sequential(*layers, nn.Flatten(), nn.BatchNorm1d(20 * 4 * 4, **KERAS_BN),
                         nn.Linear(320, 90, init="glorot_uniform"), nn.BatchNorm1d(90, **KERAS_BN), nn.ReLU(),
                         nn.Linear(90, num_classes, init="glorot_uniform"),
                         nn.BatchNorm1d(num_classes, **KERAS_BN))


# --------------------------------------------------------------------------- beyond the reports

RESNET = Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4, batch_size=128,
                epochs=182, lr_milestones=(91, 136), augmentation="pad_crop_flip",
                normalization="standardize")


def _resnet20(preact=False, se=None, num_classes=10):
    """He et al. 2016's CIFAR ResNet-20: a 3x3 conv to 16 channels, three stages of three basic
    blocks (16, 32, 64 channels; stride 2 where a stage starts), GAP, FC.

    The paper's CIFAR shortcut pads the missing channels with zeros ("option A"); minicnn uses a
    1x1 projection there ("option B"), which costs 2.5k parameters and is one code path shared
    with every other residual network.
    """
    layers = [nn.Conv2d(3, 16, 3, padding=1, bias=False, init="he_normal")]
    if not preact:
        layers += [nn.BatchNorm2d(16), nn.ReLU()]
    channels = 16
    for stage, width in enumerate((16, 32, 64)):
        for block in range(3):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(nn.ResidualBlock(channels, width, stride, preact=preact, se=se))
            channels = width
    if preact:  # v2 blocks end on the add: normalize and activate once before pooling
        layers += [nn.BatchNorm2d(64), nn.ReLU()]
    return nn.Sequential(*layers, nn.GlobalAvgPool2d(), nn.Linear(64, num_classes, init="he_normal"))


SPECS = [
    _report_a("A1", "cnn4_raw", "C32-P-C32-P-C32-P-FC10 on raw 0-255 inputs", "63.00% (loss 2.198)", 0.6300,
              recipe=Recipe(batch_size=512, epochs=300, normalization="raw"), filters=[32, 32, 32]),
    _report_a("A2", "cnn4", "C32-P-C32-P-C32-P-FC10, inputs /255", "72.87% (loss 1.140)", 0.7287,
              filters=[32, 32, 32]),
    _report_a("A3", "cnn6_c32", "(C32-P) x5 - FC10", "70.27%", 0.7027, filters=[32] * 5),
    _report_a("A4", "cnn6_wide", "C16-P-C32-P-C64-P-C128-P-C256-P-FC10",
              "54.60% at the end, 73% at best epoch", 0.5460, filters=[16, 32, 64, 128, 256]),
    _report_a("A5", "cnn6", "C32-P-C64-P-C64-P-C64-P-C128-P-FC10", "74.77%", 0.7477, filters=A5),
    _report_a("A6", "cnn7", "A5 + FC128(ReLU) before FC10", "75.02% (loss 5.386)", 0.7502,
              filters=A5, fc_hidden=128),
    _report_a("A7", "cnn7_he", "A6 with he-uniform init", "72.94%", 0.7294, filters=A5, fc_hidden=128,
              init="he_uniform"),
    _report_a("A8", "cnn7_bn", "A6 with BN (after the ReLU) after every conv and FC128", "77.27%", 0.7727,
              filters=A5, fc_hidden=128, bn=True),
    _report_a("A9", "cnn7_dropout", "A6 with D0.3 after every P and FC128", "80.67% (loss 0.557)", 0.8067,
              filters=A5, fc_hidden=128, dropout=0.3),
    _report_a("A10", "cnn7_bn_dropout", "A8 + A9", "82.98% (loss 0.509)", 0.8298, filters=A5, fc_hidden=128,
              bn=True, dropout=0.3),
    _report_a("A11", "cnn7_bn_dropout_he", "A10 with he-uniform init", "83.75% (loss 0.501)", 0.8375,
              filters=A5, fc_hidden=128, bn=True, dropout=0.3, init="he_uniform"),
    _report_a("A12", "cnn7_bn_dropout_he_aug", "A11 + shift 0.1 and horizontal flip", "81.40% (loss 0.552)",
              0.8140, recipe=Recipe(batch_size=512, epochs=300, **SHIFT_FLIP), filters=A5, fc_hidden=128,
              bn=True, dropout=0.3, init="he_uniform"),
    _report_a("A13", "vgg_like", "[C-C-BN-P-D0.3] x (32, 64, 64, 64, 128), FC128-BN-D0.3-FC10, he-uniform",
              "85.87% (loss 0.635)", 0.8587, filters=A5, fc_hidden=128, bn=True, dropout=0.3,
              init="he_uniform", double=True),
    _report_a("A14", "vgg_like_aug", "A13 + shift 0.1 and horizontal flip", "89.02% (loss 0.348)", 0.8902,
              recipe=Recipe(batch_size=512, epochs=300, **SHIFT_FLIP), filters=A5, fc_hidden=128, bn=True,
              dropout=0.3, init="he_uniform", double=True),
    ModelSpec("vgg11", ("B1",), "B", "VGG11 for 32x32, two 3x3/2 pools, GAP, FC1000-FC512-FC10",
              lambda k=10: _vgg11(num_classes=k), REPORT_B, "did not learn: ~10% (one class guessed)", 0.10),
    ModelSpec("vgg11_bn", ("B2",), "B", "B1 with BN after every conv", lambda k=10: _vgg11(True, num_classes=k),
              REPORT_B, "~90% train, ~80% valid", 0.80),
    ModelSpec("vgg11_bn_dropout", ("B3",), "B", "B2 + D0.2 after every P",
              lambda k=10: _vgg11(True, 0.2, num_classes=k), REPORT_B, "~80% test, less overfitting", 0.80),
    ModelSpec("vgg11_l2", ("B4",), "B", "B1 with L2 weight regularization (5e-4, our choice: the report "
              "gives no value) instead of BN", lambda k=10: _vgg11(num_classes=k),
              Recipe(batch_size=128, epochs=15, normalization="standardize", split="holdout", weight_decay=5e-4),
              "underfits", None),
    ModelSpec("vgg11_bn_aug", ("B5",), "B", "B2 + vertical flip, rotation, affine, crop, colour change",
              lambda k=10: _vgg11(True, num_classes=k),
              Recipe(batch_size=128, epochs=15, normalization="standardize", split="holdout",
                     augmentation="report_b"), "~80% test", 0.80),
    ModelSpec("vgg8_bn", ("C",), "C", "conv1..conv8 (conv-BN-ReLU, 2x2 pools), fc1 FC512-BN-ReLU, output FC10-BN",
              _vgg8_bn, Recipe(batch_size=32, epochs=30, augmentation="keras_rot_shift_flip",
                              checkpoint="improvements"),
              "84.97% best test accuracy (epoch 24 of 30)", 0.8497),
    ModelSpec("cifar100_cnn", ("D",), "D", "3 stages [C(a)-BN-ReLU-Pad]x3 + P + D0.25, a = 128, 64, 32; "
              "BN-FC90-BN-ReLU-FC100-BN", _cifar100_cnn,
              Recipe(dataset="cifar100", batch_size=150, epochs=50, checkpoint="every-epoch"),
              "~52% validation (~60% training) on CIFAR-100", 0.52),
    ModelSpec("resnet20", ("E1",), "E", "He et al. 2016 CIFAR ResNet-20 (3x3 stages of 16/32/64)",
              lambda k=10: _resnet20(num_classes=k), RESNET, "91.25% (He et al. 2016)", 0.9125),
    ModelSpec("resnet20_preact", ("E2",), "E", "ResNet-20 with pre-activation blocks (He et al. 2016b)",
              lambda k=10: _resnet20(preact=True, num_classes=k), RESNET, "no figure reported", None),
    ModelSpec("resnet20_se", ("E3",), "E", "ResNet-20 with an SE block (reduction 8) in every block",
              lambda k=10: _resnet20(se=8, num_classes=k), RESNET, "no figure reported", None),
]


def all_specs() -> list[ModelSpec]:
    return list(SPECS)


def get_spec(name: str) -> ModelSpec:
    """A spec by name or report id, case-insensitive (vgg_like, A13, a13)."""
    key = name.lower()
    for spec in SPECS:
        if key == spec.name or key in (alias.lower() for alias in spec.aliases):
            return spec
    raise ValueError(f"unknown architecture {name!r}; choose one of: "
                     + ", ".join(f"{s.name} ({'/'.join(s.aliases)})" for s in SPECS))
