"""The CUDA-graph seam, checked without a GPU: after warm-up, consecutive training steps must
launch the same kernels with the same scalar arguments and copy nothing to the device (the
optimizer's step and learning rate, and dropout's steps, live in device memory)."""
import numpy as np
import pytest

from minicnn import functional as F
from minicnn import optim, tensor
from minicnn.backends.recording import ArgInfo, LaunchRecord, Recorder, graph_blockers
from minicnn.models.zoo import get_spec


def recorded_steps(arch, make_optimizer, steps=3, lr_at_last=None):
    """The launches of each training step of `arch` on a recording dry runtime, and the
    optimizer's host-to-device writes after each step, gradient tables aside (NumPy gives
    each step's new gradient arrays new addresses; see cuda_optim.py)."""
    recorder = Recorder()
    device = recorder.device("dry")
    model = get_spec(arch).build().to(device)
    optimizer = make_optimizer(model.parameters())
    x, labels = tensor(np.zeros((2, 3, 32, 32), np.float32), device=device), np.zeros(2, np.int64)
    launches, writes = [], []
    with np.errstate(all="ignore"):  # the dry runtime leaves arrays uninitialized
        for step in range(steps):
            if lr_at_last is not None and step == steps - 1:
                optimizer.lr = lr_at_last
            recorder.reset()
            loss = F.cross_entropy(model(x), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            launches.append(recorder.launches)
            groups = device.kernels._multi_tensor.groups.values()
            counters = device.kernels._step_counters.values()  # dropout steps
            writes.append(sum(n for group in groups for role, n in group.host_writes.items()
                              if role != "grads") + sum(c.host_writes for c in counters))
    return launches, writes


@pytest.mark.parametrize("arch, make_optimizer", [
    ("vgg_like", optim.Adam), ("vgg8_bn", optim.Adam),
    ("resnet20", lambda p: optim.SGD(p, 0.1, momentum=0.9))])
def test_a_warm_step_could_be_replayed_by_a_graph(arch, make_optimizer):
    launches, writes = recorded_steps(arch, make_optimizer)
    assert graph_blockers(launches[1], launches[2]) == []  # vgg_like: dropout steps included
    assert writes[0] > 0 and writes[1] == writes[2] == writes[0]  # tables and schedule, once
    assert graph_blockers(launches[0], launches[1]) == []  # nothing step-dependent at all


def test_a_new_learning_rate_is_written_to_device_memory_not_passed_to_kernels():
    launches, writes = recorded_steps("vgg8_bn", optim.Adam, lr_at_last=5e-4)
    assert graph_blockers(launches[1], launches[2]) == []
    assert writes[2] == writes[1] + 1  # one write of the schedule, outside any graph


def launch(grid):
    return LaunchRecord(0, "k.cu", "k<float>", grid, (256, 1, 1), 0, (ArgInfo((4,), "float32"),
                                                                     ArgInfo(None, "float32", 1.0)))


def test_graph_blockers_names_changed_geometry_and_kernels():
    a = launch((4, 1, 1))
    assert graph_blockers([a], [launch((5, 1, 1))]) == [
        "k<float>: launch geometry changes ((4, 1, 1) -> (5, 1, 1))"]
    assert "different kernels" in graph_blockers([a], [a, a])[0]


def test_recorded_bytes_count_the_arrays_reached_through_pointer_tables():
    recorder = Recorder()
    kernels = recorder.device("dry").kernels
    shapes = [(3, 4), (1000,), (2, 5)]
    state = [[np.zeros(s, np.float32) for s in shapes] for _ in range(4)]
    kernels.adam_update(*state, 1, 1e-3, 0.9, 0.999, 1e-8, 0.0, False)
    (update,) = recorder.launches  # the step advanced in the same launch
    tensors = sum(a.nbytes for arrays in state for a in arrays)
    # 4 pointer tables, sizes, first blocks, the schedule, the arrival counter
    tables = 4 * 3 * 8 + 3 * 4 + 4 * 4 + 4 * 8 + 4
    assert update.array_bytes == tensors + tables
