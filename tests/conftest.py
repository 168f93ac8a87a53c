import pytest
import torch

from sbm.core.gmm import GaussianMixture


@pytest.fixture
def mixture() -> GaussianMixture:
    """An unequal-weight 2-D mixture with correlated components (the default's shape)."""
    return GaussianMixture(
        [0.6, 0.3, 0.1],
        [[-4.0, -4.0], [4.0, 4.0], [4.0, -4.0]],
        [[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.6], [0.6, 0.8]], [[0.5, 0.0], [0.0, 1.5]]],
    )


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_thread():
    """Run a module's tiny tensor ops on one thread: on a busy 2-core machine OpenMP's second
    thread only adds contention (30–100× slower convolutions were measured)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def benchmark_script():
    """name -> the module benchmarks/<name>.py (scripts, not a package), loaded once per name."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "benchmarks"
    loaded = {}

    def load(name: str):
        if name not in loaded:
            spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            loaded[name] = module
        return loaded[name]

    return load
