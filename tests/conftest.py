"""Markers, the skip rule for GPU tests, and the shared tiny model."""

import os

import pytest

# The same defaults `freelunch` sets before Ray is first imported (cluster/cli.py): Ray reads some of
# them at import time, and any test may be the first to import it.
from cluster.cli import DEFAULT_ENV

for key, value in DEFAULT_ENV.items():
    os.environ.setdefault(key, value)


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA GPU (skipped without one)")
    config.addinivalue_line("markers", "slow: takes more than 10 s (real Ray, vLLM or DeepSpeed)")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_model_dir():
    """The tiny random Llama + BPE tokenizer (built once into the cache, ~5 s)."""
    from cluster.models import resolve_model

    return str(resolve_model("tiny-random"))
