"""A Keras-style layer table: every leaf layer's path, output shape and parameter count."""
import numpy as np

from minicnn.autograd import Tensor, no_grad
from minicnn.backends import get_device


def summary(model, input_shape=(3, 32, 32)):
    """[(layer path, output shape without the batch axis, parameter count)] for every leaf layer,
    found by running one small batch through the model in eval mode (training mode is restored)."""
    rows, handles = [], []
    leaves = [(path, m) for path, m in model.named_modules() if path and not m.children()]
    for path, module in leaves:
        count = sum(p.size for p in module._parameters.values())
        handles.append(module.register_forward_hook(
            lambda m, inputs, out, path=path, count=count: rows.append((path, tuple(out.shape[1:]), count))))
    was_training = model.training
    device = model.parameters()[0].device if model.parameters() else get_device("cpu")
    dtype = model.parameters()[0].dtype if model.parameters() else np.float32
    try:
        with no_grad():
            model.eval()(Tensor(device.xp.zeros((2,) + tuple(input_shape), dtype), device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return rows


def format_summary(rows) -> str:
    """The table as text, with the total at the bottom."""
    width = max([len(path) for path, _, _ in rows] + [5])
    lines = [f"{'layer':<{width}}  {'output shape':<18} {'params':>10}", "-" * (width + 31)]
    lines += [f"{path:<{width}}  {str(shape):<18} {count:>10,}" for path, shape, count in rows]
    lines.append(f"{'total':<{width}}  {'':<18} {sum(r[2] for r in rows):>10,}")
    return "\n".join(lines)
