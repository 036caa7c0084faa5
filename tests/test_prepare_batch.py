"""The loader's per-batch work in one kernel (kernels.prepare_batch): the emulated CUDA kernel
against numpy_ref, the loader against the separate steps it replaced (gather, astype, warp,
colour, subtract, divide), resumed epochs, and what a batch launches and allocates."""
import numpy as np
import pytest

from minicnn.backends import checks, numpy_ref
from minicnn.backends.recording import Recorder
from minicnn.data import AugmentSpec, BatchLoader, Normalizer, affine_inverse, sample_params
from minicnn.data.augment import apply_params

MEAN, STD = np.array([125.3, 122.9, 113.8]), np.array([63.0, 62.1, 66.7])


@pytest.fixture(scope="module")
def emu():
    from minicnn.backends import get_device

    return get_device("emu")


def uint8_set(n=7, h=5, w=6, seed=0):
    """Random pixels with the edge values 0 and 255 in every image."""
    images = np.random.default_rng(seed).integers(0, 256, (n, 3, h, w), dtype=np.uint8)
    images[:, :, 0, 0], images[:, :, -1, -1] = 0, 255
    return images, np.arange(n, dtype=np.int64) * 3 % 10


def batch_args(case, dtype, h=5, w=6):
    """prepare_batch's arguments after images and labels for a named case (an odd batch of 3)."""
    index = np.array([4, 0, 6])
    crop = affine_inverse(h, w, shift_x=[4, -4, 0], shift_y=[-4, 0, 4], hflip=[1, 0, 1])
    factors = np.array([[1.3, 0.8, 1.2], [0.7, 1.5, 0.0], [1.0, 1.0, 1.0]])
    none = (None, "nearest", None)
    cases = {"gather only": (*none, None, None),
             "normalize": (*none, MEAN, STD),
             "flips": (affine_inverse(h, w, hflip=[1, 0, 1], vflip=[0, 1, 1]), "nearest", None, MEAN, STD),
             "crop at borders": (crop, "constant", None, MEAN, STD),
             "crop, nearest": (crop, "nearest", None, None, None),
             "rotation": (affine_inverse(h, w, angle=[30, -75, 180]), "constant", None, MEAN, STD),
             "colour": (crop, "constant", factors, MEAN, STD)}
    inverse, fill, colour, mean, std = cases[case]
    cast = (lambda a: None if a is None else a.astype(dtype))
    return index, cast(inverse), fill, cast(colour), cast(mean), cast(std), dtype


# whole-pixel moves, and no colour change: every value is a copy, a subtract and a divide
EXACT = ("gather only", "normalize", "flips", "crop at borders", "crop, nearest")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", ["gather only", "normalize", "flips", "crop at borders",
                                  "crop, nearest", "rotation", "colour"])
def test_kernel_matches_the_reference(emu, case, dtype):
    images, labels = uint8_set()
    args = (images, labels, *batch_args(case, np.dtype(dtype)))
    checks.prepare_batch(*args)
    x, y = numpy_ref.prepare_batch(*args)
    x_emu, y_emu = emu.kernels.prepare_batch(*args)
    assert x_emu.dtype == x.dtype == dtype and x.shape == (3, 3, 5, 6)
    assert np.array_equal(y_emu, labels[[4, 0, 6]]) and np.array_equal(y, y_emu)
    if case in EXACT:
        assert np.array_equal(x_emu, x), f"{case}: {np.abs(x_emu - x).max()}"
    else:  # bilinear weights (and colour's mean luma, summed in another order) round differently
        np.testing.assert_allclose(x_emu, x, rtol=1e-4 if dtype == np.float32 else 1e-10, atol=1e-4)
    if case == "crop at borders":  # image 0 moved 4 px right and up: only row 0's last 2 px remain
        fill = (0 - MEAN.astype(dtype)) / STD.astype(dtype)
        outside = np.ones((5, 6), bool)
        outside[0, 4:] = False
        assert np.all(x[0][:, outside] == fill[:, None])
        corner = images[4, :, 4, :3:-1].astype(dtype)  # flipped: the last row's last 2 px, mirrored
        expected = (corner - MEAN.astype(dtype)[:, None]) / STD.astype(dtype)[:, None]
        assert np.array_equal(x[0, :, 0, 4:], expected)


def test_edge_values_and_an_empty_batch(emu):
    images = np.zeros((2, 3, 4, 4), np.uint8)
    images[1] = 255
    labels = np.array([7, 9])
    for kernels in (numpy_ref, emu.kernels):
        x, y = kernels.prepare_batch(images, labels, np.array([1, 0, 1]), None, "nearest", None,
                                     None, None, np.float32)
        assert np.array_equal(x[:, 0, 0, 0], [255, 0, 255]) and np.array_equal(y, [9, 7, 9])
        x, y = kernels.prepare_batch(images, labels, np.zeros(0, np.int64), None, "nearest", None,
                                     None, None, np.float32)
        assert x.shape == (0, 3, 4, 4) and y.shape == (0,)


@pytest.mark.parametrize("call, message", [
    (lambda i, l, k: (i.astype(np.float32), l, k, None, "nearest", None, None, None, np.float32),
     "uint8 images"),
    (lambda i, l, k: (i, l[:-1], k, None, "nearest", None, None, None, np.float32), r"\(7,\) labels"),
    (lambda i, l, k: (i, l, k.astype(float), None, "nearest", None, None, None, np.float32), "int index"),
    (lambda i, l, k: (i, l, k, None, "nearest", None, None, None, np.int32), "float32 or float64"),
    (lambda i, l, k: (i, l, k, np.zeros((2, 2, 3)), "nearest", None, None, None, np.float32),
     r"inverse must have shape \(3, 2, 3\)"),
    (lambda i, l, k: (i, l, k, np.zeros((3, 2, 3)), "wrap", None, None, None, np.float32), "fill must be"),
    (lambda i, l, k: (i, l, k, None, "nearest", np.ones((3, 2)), None, None, np.float32),
     r"factors must have shape \(3, 3\)"),
    (lambda i, l, k: (i, l, k, None, "nearest", None, MEAN, None, np.float32), "both be"),
])
def test_bad_arguments_are_one_line_errors(call, message):
    images, labels = uint8_set()
    with pytest.raises(ValueError, match=message):
        checks.prepare_batch(*call(images, labels, np.array([4, 0, 6])))


def separate_steps(loader, epoch, xp=np, kernels=numpy_ref):
    """The loader's batches of `epoch` made as before prepare_batch: gather, astype, the
    augmentation kernels (augment.apply_params), then the Normalizer's subtract and divide."""
    rng = np.random.default_rng([loader.seed, epoch])
    n = len(loader.labels)
    order = rng.permutation(n) if loader.shuffle else np.arange(n)
    draws = sample_params(loader.augment, n, rng, *loader.images.shape[2:]).to(xp, loader.dtype)
    normalize = loader.normalizer.on(xp, loader.dtype)
    for start in range(0, n, loader.batch_size):
        index = order[start:start + loader.batch_size]
        x = apply_params(loader.images[index].astype(loader.dtype),
                         draws.rows(start, start + loader.batch_size), kernels)
        yield normalize(x), loader.labels[index]


@pytest.mark.parametrize("device", ["cpu", "emu"])
@pytest.mark.parametrize("spec", [AugmentSpec(crop_pad=4, hflip=True, fill="constant"),
                                  AugmentSpec(shift=0.1, hflip=True),
                                  AugmentSpec(rotation=10, brightness=0.2, contrast=0.2, saturation=0.2)],
                         ids=["pad_crop_flip", "keras_shift_flip", "rotation+colour"])
def test_a_seeded_loader_gives_the_batches_of_the_separate_steps(device, spec):
    """Same draws, same crops and flips, same bits: fixed-seed runs and resumes are unchanged."""
    images, labels = uint8_set(n=11, h=8, w=8, seed=3)
    normalizer = Normalizer(tuple(MEAN), tuple(STD))
    loader = BatchLoader(images, labels, 4, normalizer=normalizer, augment=spec, shuffle=True,
                         seed=9, device=device)
    kernels = loader.device.kernels
    for epoch in range(2):
        before = list(separate_steps(loader, epoch, loader.device.xp, kernels))
        now = list(loader)
        assert [len(y) for _, y in now] == [4, 4, 3]
        for (x, y), (x_before, y_before) in zip(now, before):
            assert np.array_equal(y, y_before) and np.array_equal(x, x_before)
    resumed = BatchLoader(images, labels, 4, normalizer=normalizer, augment=spec, shuffle=True,
                          seed=9, device=device)
    resumed.set_epoch(1)
    for (x, y), (x_then, y_then) in zip(resumed, separate_steps(loader, 1, loader.device.xp, kernels)):
        assert np.array_equal(x, x_then) and np.array_equal(y, y_then)


@pytest.mark.parametrize("spec, launches, allocations", [
    (AugmentSpec(crop_pad=4, hflip=True, fill="constant"), ["prepare_batch<float>"], 2),
    (None, ["prepare_batch<float>"], 2),
    (AugmentSpec(brightness=0.2), ["prepare_batch<float>", "brightness_luma_partial_sums<float>",
                                    "sum_partials<float>", "adjust_colour<float>"], 5)])
def test_a_batch_is_one_launch_and_no_glue(spec, launches, allocations):
    """On the recorded device a batch runs our kernels only (before: a gather, an astype, a
    subtract, a divide and the labels' gather through the array module) and allocates its
    outputs (x, y; with colour changes the luma partials, means and the colour kernel's output)."""
    recorder = Recorder(count_glue=True)
    images, labels = uint8_set(n=10, h=8, w=8)
    loader = BatchLoader(images, labels, 4, normalizer=Normalizer(tuple(MEAN), tuple(STD)),
                         augment=spec, shuffle=True, device=recorder.device("emu"))
    batches = iter(loader)
    next(batches)
    recorder.reset()
    next(batches)
    assert [launch.kernel for launch in recorder.launches] == launches
    assert recorder.glue == [] and recorder.allocations == allocations
    assert recorder.host_to_device == 0
