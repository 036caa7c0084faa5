"""What the feature-map figures show is what the layers compute."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn import nn
from minicnn.models import get_spec
from minicnn.viz import figures
from minicnn.viz.activations import activations, features, layer_table


def small_net():
    mc.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(6 * 4 * 4, 5))


def trained_bn(model):
    """Running statistics other than the defaults, so eval mode is visible in the numbers."""
    bn = model.get_layer("bn1")
    bn.running_mean[...] = np.linspace(-1, 1, 6)
    bn.running_var[...] = np.linspace(0.5, 2, 6)
    return model


def images(n, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3, 8, 8)).astype(np.float32)


def test_activations_equal_a_plain_forward():
    model, x = trained_bn(small_net()), images(4)
    out = activations(model, x, ["conv1", "relu1", "fc1"])
    conv = model.conv1
    with mc.no_grad():
        expected_conv = F.conv2d(mc.tensor(x), conv.weight, conv.bias, padding=1).numpy()
    np.testing.assert_array_equal(out["conv1"], expected_conv)
    bn = model.bn1  # eval mode: the running statistics, written out by hand
    normalized = (expected_conv - bn.running_mean[:, None, None]) / np.sqrt(bn.running_var[:, None, None] + bn.eps)
    expected_relu = np.maximum(normalized * bn.weight.numpy()[:, None, None] + bn.bias.numpy()[:, None, None], 0)
    np.testing.assert_allclose(out["relu1"], expected_relu, rtol=1e-5, atol=1e-6)
    model.eval()
    with mc.no_grad():
        np.testing.assert_array_equal(out["fc1"], model(mc.tensor(x)).numpy())
    assert model.training is False


def test_the_mode_is_restored_and_batches_do_not_change_features():
    model, x = small_net().train(), images(10)
    whole = features(model, x, "pool1", batch_size=10, progress=False)
    pieces = features(model, x, "pool1", batch_size=3, progress=False)
    assert whole.shape == (10, 6 * 4 * 4) and model.training
    np.testing.assert_allclose(pieces, whole, rtol=1e-6, atol=1e-6)


def test_the_feature_map_figure_shows_those_numbers():
    model, x = trained_bn(small_net()), images(1)
    maps = activations(model, x, ["relu1"])["relu1"][0]
    figure = figures.feature_maps_figure(np.zeros((8, 8, 3)), maps, "relu1", shared_scale=True)
    shown = [axes.images[0] for axes in figure.axes[1:]]
    assert len(shown) == 6
    for channel, image in enumerate(shown):
        np.testing.assert_array_equal(image.get_array(), maps[channel])
        assert image.get_clim() == (maps.min(), maps.max())  # one shared scale
    figure = figures.feature_maps_figure(np.zeros((8, 8, 3)), maps, "relu1", shared_scale=False, limit=4)
    assert len(figure.axes) == 5 and "first 4 of 6 channels" in figure.get_suptitle()
    assert "per-map colour scale" in figure.get_suptitle()
    assert figure.axes[1].images[0].get_clim() == (maps[0].min(), maps[0].max())


def test_layer_table_names_the_reports_layers():
    table = {path: shape for path, _, shape in layer_table(get_spec("vgg8_bn").build(10))}
    assert table["conv1"] == (32, 32, 32) and table["conv8"] == (256, 4, 4)
    assert table["fc1"] == (512,) and table["output"] == (10,)
    resnet = {path: kind for path, kind, _ in layer_table(get_spec("resnet20").build(10))}
    assert resnet["block9"] == "ResidualBlock" and resnet["block4.shortcut.conv1"] == "Conv2d"


def test_an_unknown_layer_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown layer 'conv9'.*conv1, bn1, relu1"):
        activations(small_net(), images(1), ["conv9"])


def test_the_feature_map_figure_has_a_colour_bar_and_a_caption_under_the_input():
    maps = np.arange(4 * 3 * 3, dtype=np.float32).reshape(4, 3, 3)
    figure = figures.feature_maps_figure(np.zeros((8, 8, 3)), maps, "relu1", caption="test 3: cat\npredicted dog 40%")
    input_axes = figure.axes[0]
    assert input_axes.get_xlabel() == "test 3: cat\npredicted dog 40%"
    [bar] = input_axes.child_axes  # an inset: the figure's own axes stay the panels
    assert bar.get_xlim() == (0.0, 35.0) and "activation" in bar.get_xlabel()  # the shared range of the maps
    figure = figures.feature_maps_figure(np.zeros((8, 8, 3)), maps, "relu1", shared_scale=False)
    assert [label.get_text() for label in figure.axes[0].child_axes[0].get_xticklabels()] == ["min", "max"]


def test_the_every_layer_figure_names_the_classes_of_the_output_row_and_labels_the_input():
    classes = [f"c{i}" for i in range(10)]
    outputs = {"conv1": np.ones((4, 8, 8)), "fc1": np.arange(16.0), "output": np.arange(10.0)}
    figure = figures.all_layers_figure(np.zeros((8, 8, 3)), outputs, "net", limit=4, caption="test 0: cat",
                                       classes=classes)
    rows = [axes for axes in figure.axes if axes.images and axes.images[0].get_array().shape[0] == 1]
    fc1, output = rows
    assert [label.get_text() for label in output.get_xticklabels()] == classes
    assert not fc1.get_xticklabels()  # 16 values are not classes
    assert "test 0: cat" in [text.get_text() for axes in figure.axes for text in axes.texts]
