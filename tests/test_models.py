"""The model zoo: every documented network builds, has the report's layers and conventions."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import nn
from minicnn.models import all_specs, get_spec, summary

SPECS = all_specs()


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_network_maps_a_batch_to_class_scores(spec):
    classes = 100 if spec.recipe.dataset == "cifar100" else 10
    model = spec.build(classes)
    x = mc.tensor(np.random.default_rng(0).standard_normal((2, 3, 32, 32)))
    with mc.no_grad():
        assert model(x).shape == (2, classes)


def test_vgg_like_has_the_hand_counted_parameters():
    # stage 1: 896 + 9,248 + BN 64; stages 2-4 per 64-wide pair 36,928 x 2 + 128 (the first
    # pair 18,496 + 36,928 + 128); stage 5: 73,856 + 147,584 + 256; FC128 16,512, BN 256, FC10 1,290
    total = (896 + 9248 + 64) + (18496 + 36928 + 128) + 2 * (2 * 36928 + 128) \
        + (73856 + 147584 + 256) + (16512 + 256 + 1290)
    assert sum(p.size for p in get_spec("A13").build(10).parameters()) == total == 453482


def test_report_c_layers_are_named_as_in_its_code():
    model = get_spec("vgg8_bn").build(10)
    names = [path for path, _ in model.named_modules()]
    for name in [f"conv{i}" for i in range(1, 9)] + ["fc1", "output"]:
        assert name in names
    rows = dict((path, shape) for path, shape, _ in summary(model))
    assert rows["conv8"] == (256, 4, 4) and rows["fc1"] == (512,) and rows["output"] == (10,)


def test_report_a_pools_shrink_to_one_and_report_b_to_seven():
    rows = dict((p, s) for p, s, _ in summary(get_spec("A3").build(10)))
    assert [rows[f"pool{i}"][1] for i in range(1, 6)] == [16, 8, 4, 2, 1]
    rows = dict((p, s) for p, s, _ in summary(get_spec("B1").build(10)))
    assert rows["pool1"][1:] == (15, 15) and rows["pool2"][1:] == (7, 7)
    assert rows["fc2"] == (512,)  # the 512-d layer whose features report B plotted


def test_report_d_pads_after_the_activation():
    model = get_spec("D").build(100)
    kinds = [type(m).__name__ for m in model][:4]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "ZeroPad2d"]
    assert model.conv1.padding == "valid"


@pytest.mark.parametrize("name,convention,momentum", [("A8", "keras", 0.01), ("C", "keras", 0.01),
                                                      ("D", "keras", 0.01), ("B2", "torch", 0.1),
                                                      ("resnet20", "torch", 0.1)])
def test_batch_norm_follows_the_reports_framework(name, convention, momentum):
    bns = [m for m in get_spec(name).build(10).modules() if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    assert bns and all(b.convention == convention and b.momentum == pytest.approx(momentum) for b in bns)


def test_report_a_uses_keras_init_and_a11_he_init():
    assert get_spec("A10").build(10).conv1.init == "glorot_uniform"
    assert get_spec("A11").build(10).conv1.init == "he_uniform"
    assert not get_spec("A10").build(10).conv1.bias.numpy().any()


def test_aliases_and_unknown_names():
    assert get_spec("a13").name == get_spec("vgg_like").name == "vgg_like"
    with pytest.raises(ValueError, match="unknown architecture 'vgg99'.*vgg_like \\(A13\\)"):
        get_spec("vgg99")


def test_recipes_follow_the_reports():
    assert get_spec("B1").recipe.split == "holdout" and get_spec("B1").recipe.normalization == "standardize"
    assert get_spec("A1").recipe.normalization == "raw" and get_spec("A2").recipe.normalization == "scale"
    assert get_spec("C").recipe.batch_size == 32 and get_spec("C").recipe.checkpoint == "improvements"
    assert get_spec("D").recipe.checkpoint == "every-epoch" and get_spec("D").recipe.dataset == "cifar100"
    resnet = get_spec("resnet20").recipe
    assert (resnet.optimizer, resnet.lr, resnet.weight_decay, resnet.augmentation) == ("sgd", 0.1, 1e-4, "pad_crop_flip")
