"""CAM and Grad-CAM: identities that must hold, and maps that find the evidence after training."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import functional as F
from minicnn import nn, optim
from minicnn.models import get_spec
from minicnn.viz import figures
from minicnn.viz.activations import layer_table
from minicnn.viz.cam import (CamError, cam_layers, class_activation_maps, grad_cam, normalize_maps,
                             upsample_bilinear)
from minicnn.viz.views import default_layer


def gap_net(channels=3, classes=2, seed=0):
    mc.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1),
                         nn.ReLU(), nn.GlobalAvgPool2d(), nn.Linear(16, classes))


def images(n, size=8, seed=1):
    return np.random.default_rng(seed).normal(size=(n, 3, size, size)).astype(np.float32)


def test_grad_cam_at_the_pooled_layer_is_cam_over_hw():
    """d logit_c / d A_k(x, y) = w_ck / (h*w) on GAP + linear, so alpha_k = w_ck / (h*w)."""
    model, x = gap_net(classes=3), images(5)
    classes = np.array([0, 1, 2, 2, 1])  # not only the predicted ones
    cam, cam_logits = class_activation_maps(model, x, classes)
    gradcam, logits = grad_cam(model, x, "relu2", classes, relu=False)
    assert cam.shape == gradcam.shape == (5, 8, 8)
    np.testing.assert_allclose(gradcam, cam / 64, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(logits, cam_logits, rtol=1e-6)
    assert np.abs(cam).max() > 1e-3  # the comparison is not between two arrays of zeros


def test_cam_is_the_class_weights_over_the_pooled_maps():
    """Against the definition, computed here from a plain forward to relu2."""
    model, x = gap_net(classes=3), images(4)
    h = x
    for layer in list(model)[:4]:
        h = layer(mc.tensor(h) if isinstance(h, np.ndarray) else h)
    maps = h.numpy()
    weight = model.get_layer("fc1").weight.numpy()
    cam, logits = class_activation_maps(model, x)
    predicted = logits.argmax(axis=1)
    for n in range(4):
        expected = sum(weight[predicted[n], k] * maps[n, k] for k in range(16))
        np.testing.assert_allclose(cam[n], expected, rtol=1e-4, atol=1e-6)


def test_grad_cam_matches_the_closed_form_on_a_flatten_linear_head():
    """conv -> flatten -> linear: d logit_c / d A = W_c reshaped, so alpha_k = mean of W_c[k]."""
    mc.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    x = images(3)
    maps, logits = grad_cam(model, x, "conv1", np.array([2, 0, 1]), relu=False)
    with mc.no_grad():
        conv = F.conv2d(mc.tensor(x), model.conv1.weight, model.conv1.bias, padding=1).numpy()
    weight = model.fc1.weight.numpy().reshape(3, 4, 8, 8)
    for n, c in enumerate([2, 0, 1]):
        alpha = weight[c].mean(axis=(1, 2))
        np.testing.assert_allclose(maps[n], np.einsum("k,khw->hw", alpha, conv[n]), rtol=1e-4, atol=1e-6)


def test_every_image_of_a_batch_gets_its_own_map():
    model, x = gap_net(), images(6)
    together, _ = grad_cam(model, x, "conv2")
    alone = np.concatenate([grad_cam(model, x[i:i + 1], "conv2")[0] for i in range(6)])
    np.testing.assert_allclose(together, alone, rtol=1e-4, atol=1e-6)
    assert not np.allclose(together[0], together[1])
    assert all(p.grad is None for p in model.parameters())  # no gradients left behind


def test_grad_cam_refuses_a_vector_layer_and_cam_refuses_other_heads():
    model = gap_net()
    with pytest.raises(ValueError, match="spatial maps"):
        grad_cam(model, images(1), "gap1")
    head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    with pytest.raises(CamError, match="gradcam"):
        cam_layers(head)


def test_bilinear_upsampling_against_hand_values():
    """[a, b] -> 4 pixels samples at -0.25, 0.25, 0.75, 1.25 (clamped): a, .75a+.25b, .25a+.75b, b."""
    maps = np.array([[[1.0, 5.0], [1.0, 5.0]]])
    up = upsample_bilinear(maps, (4, 4))
    np.testing.assert_allclose(up[0, 0], [1, 2, 4, 5])
    np.testing.assert_allclose(up[0, :, 1], [2, 2, 2, 2])
    same = np.random.default_rng(0).normal(size=(2, 5, 5))
    np.testing.assert_allclose(upsample_bilinear(same, (5, 5)), same)
    scaled = normalize_maps(np.stack([same[0], np.zeros((5, 5))]))
    assert scaled[0].min() == 0 and scaled[0].max() == 1 and not scaled[1].any()


# --------------------------------------------------------------------------- after training

def striped_patches(n, rng, size=16, patch=5):
    """Noise images holding two patches of equal energy in two different quadrants: the class
    evidence (horizontal stripes: class 0, vertical stripes: class 1) and a checkerboard that
    every image has, which says nothing. Returns (x, labels, the evidence's quadrant)."""
    stripes = np.where(np.arange(patch) % 2 == 0, 1.5, -1.5)
    kinds = [np.repeat(stripes[:, None], patch, 1), np.repeat(stripes[None, :], patch, 0),
             np.outer(stripes, stripes) / 1.5]
    x = rng.normal(0, 0.3, (n, 3, size, size)).astype(np.float32)
    labels = rng.integers(0, 2, n)
    quadrants = np.array([rng.permutation(4)[:2] for _ in range(n)])  # (evidence, checkerboard)
    half = size // 2
    for i in range(n):
        for kind, quadrant in ((labels[i], quadrants[i, 0]), (2, quadrants[i, 1])):
            top = (quadrant // 2) * half + rng.integers(0, half - patch + 1)
            left = (quadrant % 2) * half + rng.integers(0, half - patch + 1)
            x[i, :, top:top + patch, left:left + patch] += kinds[kind]
    return x, labels, quadrants[:, 0]


def peak_quadrants(maps):
    """The quadrant (0 TL, 1 TR, 2 BL, 3 BR) of each (H, W) map's maximum."""
    n, h, w = maps.shape
    rows, cols = np.unravel_index(maps.reshape(n, -1).argmax(axis=1), (h, w))
    return (rows >= h // 2) * 2 + (cols >= w // 2)


def test_cam_and_grad_cam_find_the_evidence_after_training():
    rng = np.random.default_rng(0)
    model = gap_net(seed=0)
    test_x, test_labels, evidence = striped_patches(100, np.random.default_rng(1))

    def hits():
        cam, logits = class_activation_maps(model, test_x, test_labels)
        gradcam, _ = grad_cam(model, test_x, "relu2", test_labels)
        accuracy = (logits.argmax(axis=1) == test_labels).mean()
        return accuracy, [(peak_quadrants(upsample_bilinear(m, (16, 16))) == evidence).mean() for m in (cam, gradcam)]

    _, before = hits()
    assert max(before) < 0.5  # untrained, the maps mostly peak on the checkerboard
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(80):
        x, labels, _ = striped_patches(32, rng)
        loss = F.cross_entropy(model(mc.tensor(x)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    accuracy, after = hits()
    assert accuracy >= 0.9
    assert min(after) >= 0.8, after


@pytest.mark.parametrize("arch", ["cnn7_bn_dropout", "vgg11_bn", "vgg8_bn", "cifar100_cnn", "resnet20_preact",
                                  "resnet20_se"])
def test_every_reports_network_has_default_layers_and_grad_cam(arch):
    """One network per report (and each residual variant): the default layers exist, Grad-CAM
    gives each image a map at the last conv's resolution, and CAM exists exactly for GAP + linear."""
    mc.manual_seed(0)
    model = get_spec(arch).build(10)
    shapes = {path: shape for path, _, shape in layer_table(model)}
    layer = default_layer(model, "gradcam")
    maps, logits = grad_cam(model, images(2, size=32), layer)
    assert maps.shape == (2,) + shapes[layer][1:] and logits.shape == (2, 10)
    assert shapes[default_layer(model, "maps")][0] == model.get_layer(default_layer(model, "maps")).weight.shape[0]
    assert len(shapes[default_layer(model, "tsne")]) in (1, 3)
    if arch.startswith("resnet"):
        assert class_activation_maps(model, images(2, size=32))[0].shape == (2, 8, 8)
    else:
        with pytest.raises(CamError):
            cam_layers(model)


def test_many_grad_cam_images_form_a_grid_with_a_colour_bar_and_empty_maps_say_so():
    count = 12
    heat = np.random.default_rng(0).random((count, 1, 8, 8))
    empty = np.zeros((count, 1), bool)
    empty[5, 0] = True
    heat[5, 0] = 0
    figure = figures.cam_figure(np.zeros((count, 8, 8, 3)), heat, [["cat p=0.50"]] * count, ["test"] * count,
                                "Grad-CAM", empty)
    # 12 image + map pairs, 4 per row: 3 rows of 8 panels, not one column 12 panels tall
    assert figures.cam_groups_per_row(count, 1) == 4
    width, height = figure.get_size_inches()
    assert (width, height) == (8 * figures.BIG_CELL + figures.BAR, 3 * figures.BIG_CELL + figures.TITLE + figures.CAPTION)
    texts = [text.get_text() for axes in figure.axes for text in axes.texts]
    assert texts == ["all-zero map:\nno evidence\nfor this class"]  # only on image 5's map
    assert figure.axes[-1].get_ylabel() == "map value / the map's maximum"  # the colour bar
