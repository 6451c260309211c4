import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def default_model():
    """The embedded SmolLM2-135M, loaded once per test session (converted from GGUF on first use)."""
    from niyama.worker.loading import load_model

    return load_model()
