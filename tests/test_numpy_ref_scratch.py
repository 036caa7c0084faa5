"""numpy_ref reuses scratch buffers inside conv and pooling: no result may alias one."""
import numpy as np
import pytest

from minicnn.backends import numpy_ref as R

SAME = (1, 1, 1, 1)


@pytest.mark.parametrize("batch", [1, 3])  # with one image the NCHW result is a plain reshape
def test_conv_results_survive_the_next_call(batch):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((batch, 2, 5, 6)), rng.standard_normal((3, 2, 3, 3))
    dy = rng.standard_normal((batch, 3, 5, 6))
    results = [R.conv2d_forward(x, w, None, (1, 1), SAME),
               R.conv2d_backward_data(dy, w, x.shape, (1, 1), SAME),
               R.conv2d_backward_data(dy[:, :, ::2, ::2], w, x.shape, (2, 2), SAME),  # col2im path
               R.conv2d_backward_weight(dy, x, (3, 3), (1, 1), SAME)]
    kept = [r.copy() for r in results]
    for scale in (2.0, -1.0):  # calls with other data overwrite every scratch buffer
        R.conv2d_forward(scale * x, w, None, (1, 1), SAME)
        R.conv2d_backward_data(scale * dy, w, x.shape, (1, 1), SAME)
        R.conv2d_backward_data(scale * dy[:, :, ::2, ::2], w, x.shape, (2, 2), SAME)
        R.conv2d_backward_weight(scale * dy, x, (3, 3), (1, 1), SAME)
    for result, copy in zip(results, kept):
        np.testing.assert_array_equal(result, copy)


def test_stride_one_backward_data_equals_the_scatter_of_columns():
    """The stride-1 shortcut (a convolution with the turned kernel) against col2im, the general path."""
    rng = np.random.default_rng(1)
    for x_shape, w_shape, pads in [((2, 3, 6, 5), (4, 3, 3, 3), SAME), ((1, 2, 5, 7), (3, 2, 2, 4), (0, 1, 1, 2)),
                                   ((2, 2, 4, 4), (2, 2, 1, 1), (0, 0, 0, 0))]:
        w = rng.standard_normal(w_shape)
        ho, wo = R._output_size(x_shape, w_shape[2:], (1, 1), pads)
        dy = rng.standard_normal((x_shape[0], w_shape[0], ho, wo))
        dcols = w.reshape(w_shape[0], -1).T @ dy.transpose(1, 0, 2, 3).reshape(w_shape[0], -1)
        scattered = R._col2im(dcols, x_shape, w_shape[2:], (1, 1), pads)
        np.testing.assert_allclose(R.conv2d_backward_data(dy, w, x_shape, (1, 1), pads), scattered,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("stride,pads", [((1, 1), SAME), ((2, 2), (0, 1, 0, 1)), ((2, 1), (1, 1, 0, 2))])
def test_conv_in_chunks_of_images_equals_the_whole_batch(monkeypatch, stride, pads):
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((5, 3, 9, 8)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
    dy = rng.standard_normal(R.conv2d_forward(x, w, b, stride, pads).shape)

    def all_three():
        return (R.conv2d_forward(x, w, b, stride, pads), R.conv2d_backward_data(dy, w, x.shape, stride, pads),
                R.conv2d_backward_weight(dy, x, (3, 3), stride, pads))
    whole = all_three()
    monkeypatch.setattr(R, "COLUMNS_BYTES", 2 * 27 * 72 * 8)  # two images per chunk, three chunks
    assert len(R._image_chunks(x.shape, (3, 3), (1, 1), SAME, 8)) == 3
    for chunked, expected in zip(all_three(), whole):
        np.testing.assert_allclose(chunked, expected, rtol=1e-12, atol=1e-12)
