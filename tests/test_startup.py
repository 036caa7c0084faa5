"""Start-up cost: the CLI imports no heavy library until a command needs it (issue 14, item 3)."""
import subprocess
import sys

import numpy as np

from minicnn import random as mc_random
from minicnn.models import all_specs, get_spec
from minicnn.models.commands import _param_count
from minicnn.nn.init import shapes_only

HEAVY = ("sklearn", "scipy", "matplotlib", "cupy", "torch")


def imported_after(code: str) -> list[str]:
    """The HEAVY top-level packages present in sys.modules after `code` runs in a fresh interpreter."""
    probe = f"{code}\nimport sys\nprint('imported:', *(m for m in {HEAVY!r} if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    last = result.stdout.splitlines()[-1].split()
    assert last[0] == "imported:", result.stdout
    return last[1:]


def test_importing_the_cli_pulls_in_no_heavy_library():
    assert imported_after("import minicnn.cli") == []


def test_help_and_models_run_without_heavy_libraries():
    for argv in (["--help"], ["models"], ["train", "--help"], ["visualize", "--help"]):
        code = f"import sys; sys.argv = ['minicnn'] + {argv!r}\nfrom minicnn.cli import app\ntry:\n    app()\n" \
               f"except SystemExit:\n    pass"
        assert imported_after(code) == [], argv


def test_parameter_counts_without_drawing_weights_match_the_built_networks():
    for spec in all_specs()[:6] + [get_spec("vgg11"), get_spec("resnet20_se")]:
        built = spec.build(100 if spec.recipe.dataset == "cifar100" else 10)
        assert _param_count(spec) == sum(p.size for p in built.parameters()), spec.name


def test_shapes_only_neither_draws_nor_advances_the_generator():
    mc_random.manual_seed(3)
    before = mc_random.generator().bit_generator.state
    with shapes_only():
        model = get_spec("cnn4").build(10)
    assert mc_random.generator().bit_generator.state == before
    assert all(not np.any(p.data) for p in model.parameters())
    assert any(np.any(p.data) for p in get_spec("cnn4").build(10).parameters())  # outside: drawn again
