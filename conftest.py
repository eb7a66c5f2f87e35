"""Settings for every test in the repository, core and plugins alike."""

import os

# Nothing may come from a model or dataset hub: an accidental download fails fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run faster on one thread than on several, above all on a busy machine.

    Use it in a module with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


MEASUREMENTS = pytest.StashKey[list]()


@pytest.fixture(scope="session")
def report_measurement(request):
    """``report_measurement(line)``: a figure a test measured, printed in the summary at the end of the run."""
    return request.config.stash.setdefault(MEASUREMENTS, []).append


def pytest_terminal_summary(terminalreporter, config):
    lines = config.stash.get(MEASUREMENTS, [])
    if lines:
        terminalreporter.section("measurements")
        for line in lines:
            terminalreporter.write_line(line)
