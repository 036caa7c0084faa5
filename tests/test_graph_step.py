"""The CUDA-graph training step (minicnn/train/graph_step.py), checked without a GPU: a
stand-in graph runtime records a captured step's launches and replays them against the same
buffers, so a replayed run must equal an eager one bit for bit in the emulator, and a replay
must copy nothing from the host, allocate nothing, read nothing back and launch the same
kernels every time."""
import numpy as np
import pytest

import minicnn as mc
from minicnn import nn, optim
from minicnn.backends.recording import Recorder, graph_blockers
from minicnn.train.graph_step import GraphStep, ReplayGraphs


def small_net():
    """conv-ReLU-BN-pool-dropout (vgg_like's pattern), conv-BN-ReLU-pool (vgg8_bn's), BN1d."""
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding="same"), nn.ReLU(), nn.BatchNorm2d(4), nn.MaxPool2d(2),
        nn.Dropout(0.3, seed=5), nn.Conv2d(4, 6, 3, padding="same"), nn.BatchNorm2d(6), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(6 * 2 * 2, 8), nn.BatchNorm1d(8), nn.ReLU(),
        nn.Dropout(0.2, seed=7), nn.Linear(8, 10))


def batches(count, size=4, seed=3):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal((size, 3, 8, 8)).astype(np.float32), rng.integers(0, 10, size))
            for _ in range(count)]


def train(data, graphs, make_optimizer, lr_change_at=None):
    """Losses, state after training on `data` in the emulator, eagerly or through graphs."""
    mc.manual_seed(3)
    recorder = Recorder(track_host=True)
    device = recorder.device("emu")
    model = small_net().to(device)
    model.train()
    optimizer = make_optimizer(model.parameters())
    step = GraphStep(model, optimizer, device, ReplayGraphs(recorder) if graphs else None)
    losses = []
    for i, (x, y) in enumerate(data):
        if i == lr_change_at:
            optimizer.lr /= 2
        loss, _ = step(device.xp.asarray(x), device.xp.asarray(y))
        losses.append(float(loss))
    return losses, model.state_dict(), optimizer.state_dict(), step


OPTIMIZERS = {"adam": lambda p: optim.Adam(p, lr=1e-2),
              "sgd": lambda p: optim.SGD(p, 0.05, momentum=0.9, nesterov=True)}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_replayed_steps_equal_eager_steps_bit_for_bit(name):
    # 2 eager warm-up steps, the capture, 3 replays; a short last batch runs eagerly in between,
    # and the learning rate changes between two replays (a host write of the schedule)
    data = batches(5) + batches(1, size=3, seed=4) + batches(1, seed=5)
    eager_losses, eager_state, eager_optimizer, _ = train(data, False, OPTIMIZERS[name], 4)
    losses, state, optimizer_state, step = train(data, True, OPTIMIZERS[name], 4)
    assert step.replays == 3
    assert losses == eager_losses and len(set(losses)) == len(losses)  # fresh outputs each replay
    for key in eager_state:  # weights, BN statistics, dropout steps
        np.testing.assert_array_equal(state[key], eager_state[key], err_msg=key)
    for key in eager_optimizer:  # moments and the step count: a resume continues identically
        np.testing.assert_array_equal(optimizer_state[key], eager_optimizer[key], err_msg=key)


def test_a_replay_copies_nothing_from_the_host_allocates_nothing_and_reads_nothing_back():
    """vgg_like on the dry device (kernels that do nothing): the Python side of each step."""
    from minicnn.models.zoo import get_spec

    recorder = Recorder(execute="skip", track_host=True)
    device = recorder.device("dry")
    model = get_spec("vgg_like").build().to(device)
    model.train()
    optimizer = optim.Adam(model.parameters())
    step = GraphStep(model, optimizer, device, ReplayGraphs(recorder, run=False))
    x, y = device.xp.zeros((8, 3, 32, 32), np.float32), device.xp.zeros(8, np.int64)
    steps = []
    with np.errstate(all="ignore"):  # the dry runtime leaves arrays uninitialized
        for _ in range(5):  # 2 eager, the capture, 2 replays
            recorder.reset()
            step(x, y)
            steps.append((recorder.launches, recorder.allocations, recorder.host_to_device,
                          recorder.host_reads))
    (warm, _, warm_copies, warm_reads), (captured, _, capture_copies, _) = steps[1], steps[2]
    assert graph_blockers(warm, captured) == []  # the capture is a step like every other
    # NumPy's allocator gives each step's gradients new addresses: the optimizer uploads their
    # table again (CuPy's pool usually reuses them; the graph's memory always does)
    assert len(captured) >= 50 and (warm_copies, warm_reads) == (1, 0)  # vgg_like: 58 launches
    assert capture_copies == 1  # the gradient table, uploaded after the capture
    assert steps[3][1:] == steps[4][1:] == (0, 0, 0)  # allocations, copies, reads
    assert steps[3][0] == steps[4][0] == []  # no launch but the graph's
    assert step.replays == 2 and optimizer.step_count == 5


def test_a_new_learning_rate_before_a_replay_is_one_write_of_the_schedule():
    recorder = Recorder(execute="skip", track_host=True)
    device = recorder.device("dry")
    model = small_net().to(device)
    model.train()
    optimizer = optim.Adam(model.parameters())
    step = GraphStep(model, optimizer, device, ReplayGraphs(recorder, run=False))
    x, y = device.xp.zeros((4, 3, 8, 8), np.float32), device.xp.zeros(4, np.int64)
    with np.errstate(all="ignore"):
        for _ in range(4):
            step(x, y)
        optimizer.lr = 5e-4
        recorder.reset()
        step(x, y)
    assert (recorder.host_to_device, recorder.allocations) == (1, 0)


def test_the_loader_copies_nothing_to_the_device_after_the_epoch_starts():
    """The epoch's order and augmentation draws go over once; a batch is made on the device."""
    from minicnn.data.augment import augment_preset
    from minicnn.data.loader import BatchLoader
    from minicnn.data.splits import Normalizer

    recorder = Recorder(track_host=True)
    device = recorder.device("emu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (24, 3, 8, 8), dtype=np.uint8)
    loader = BatchLoader(images, rng.integers(0, 10, 24), 8, shuffle=True, device=device,
                         augment=augment_preset("report_b"),
                         normalizer=Normalizer.fit("standardize", images))
    epoch = iter(loader)
    recorder.reset()
    next(epoch)
    assert recorder.host_to_device == 3  # the order, the warps' and the colour draws
    recorder.reset()
    for x, y in epoch:
        assert x.shape == (8, 3, 8, 8)
    assert recorder.host_to_device == recorder.host_reads == 0
    assert recorder.launches  # the batches were augmented by the device's kernels


@pytest.fixture
def replayed_training(monkeypatch):
    """Training runs on the emulator whose steps go through ReplayGraphs when `graphs` is set
    (the real trainer uses CUDA graphs on a GPU only)."""
    from minicnn.train import loop

    def use(graphs: bool) -> Recorder:
        recorder = Recorder()
        monkeypatch.setattr(loop, "get_device", lambda name, precision=None: recorder.device("emu"))
        monkeypatch.setattr(loop.Trainer, "graph_runtime",
                            lambda self: ReplayGraphs(recorder) if graphs else None)
        return recorder
    return use


def test_training_and_resume_with_replayed_steps_equal_eager_training(tmp_path, replayed_training):
    """2 epochs of 4 steps (3 of 16 images, 1 short of 12): warm-up, capture, replays and eager
    short batches; a run resumed after epoch 1 ends with the very same weights."""
    from minicnn.train import TrainConfig, resume, train
    from test_train_fixtures import colour_cifar, tiny_spec

    spec, quiet = tiny_spec(lr=0.01, epochs=2), dict(progress=False, log=lambda m: None)
    config, data = TrainConfig.from_spec(spec, device="emu"), colour_cifar(60, 20)
    runs, launches = {}, {}
    for name, graphs in (("eager", False), ("graphs", True)):
        recorder = replayed_training(graphs)
        runs[name] = train(config, run_dir=tmp_path / name, spec=spec, data=data, **quiet)
        launches[name] = len(recorder.launches)
    train(config.replace(epochs=1), run_dir=tmp_path / "resumed", spec=spec, data=data, **quiet)
    runs["resumed"] = resume(tmp_path / "resumed", epochs=2, spec=spec, data=data, **quiet)
    eager = runs["eager"].history
    for name in ("graphs", "resumed"):
        keys = ("train_loss", "train_acc", "val_loss", "val_acc")
        assert [[row[k] for k in keys] for row in runs[name].history] == [[row[k] for k in keys] for row in eager]
        final = np.load(tmp_path / name / "last.npz")
        with np.load(tmp_path / "eager" / "last.npz") as expected:
            for key in expected.files:
                if key != "meta.json":
                    np.testing.assert_array_equal(final[key], expected[key], err_msg=f"{name} {key}")
    assert eager[-1]["train_loss"] < eager[0]["train_loss"]
    assert launches["graphs"] < launches["eager"]  # epoch 2 replayed (replays are not recorded)


def test_graphs_on_the_cpu_are_ignored_with_one_line(tmp_path):
    from minicnn.train import TrainConfig, train
    from test_train_fixtures import colour_cifar, tiny_spec

    spec, lines = tiny_spec(epochs=1), []
    train(TrainConfig.from_spec(spec, device="cpu", graphs=True), run_dir=tmp_path / "run", spec=spec,
          data=colour_cifar(), progress=False, log=lines.append)
    assert [line for line in lines if "--graphs" in line] == [
        "note: --graphs has no effect on cpu (CUDA graphs need a GPU); steps run eagerly"]


def test_a_failed_capture_is_one_line_that_names_the_way_out():
    class FailingGraphs:
        def capture(self, step):
            raise RuntimeError("operation not permitted when stream is capturing\nmore")

    device = Recorder(execute="skip").device("dry")
    model = small_net().to(device)
    model.train()
    step = GraphStep(model, optim.Adam(model.parameters()), device, FailingGraphs(), warmup=0)
    with np.errstate(all="ignore"), pytest.raises(mc.train.TrainError) as error:
        step(np.zeros((4, 3, 8, 8), np.float32), np.zeros(4, np.int64))
    assert str(error.value) == ("capturing the training step as a CUDA graph failed (RuntimeError: "
                                "operation not permitted when stream is capturing); rerun with "
                                "--no-graphs (the last checkpoint is intact)")


@pytest.mark.cuda
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_cuda_graph_replays_equal_eager_steps_on_a_gpu(name):
    """The real capture (CupyGraphs), where a GPU is at hand: the same run as above, eager and
    replayed, must agree bit for bit (the same kernels in the same order)."""
    from minicnn.backends import cuda_status, get_device
    from minicnn.train.graph_step import CupyGraphs

    usable, reason = cuda_status()
    if not usable:
        pytest.skip(f"no usable GPU: {reason}")
    device = get_device("cuda")
    data = batches(5) + batches(1, size=3, seed=4) + batches(1, seed=5)
    results = []
    for graphs in (None, CupyGraphs(device.kernels.runtime)):
        mc.manual_seed(3)
        model = small_net().to(device)
        model.train()
        optimizer = OPTIMIZERS[name](model.parameters())
        step = GraphStep(model, optimizer, device, graphs)
        losses = []
        for i, (x, y) in enumerate(data):
            if i == 4:
                optimizer.lr /= 2
            loss, _ = step(device.xp.asarray(x), device.xp.asarray(y))
            losses.append(float(loss))
        results.append((losses, model.state_dict(), step.replays))
    (eager, eager_state, _), (replayed, state, replays) = results
    assert replays == 3 and replayed == eager
    for key in eager_state:
        np.testing.assert_array_equal(state[key], eager_state[key], err_msg=key)
