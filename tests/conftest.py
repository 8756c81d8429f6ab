"""Hermetic fixtures: a small world, a tokenizer trained on it, and a tiny random GPT-2, all built in-process.

Nothing here touches the network. Session-scoped so the suite builds each once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a test that reaches for the Hub fails loudly instead of hanging
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable

SMALL_WORLD = ["--num_people", "60", "--frequent_exposures", "8", "--name_pool_size", "16"]


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: one thread is as fast, and on a shared 2-core machine two threads per process thrash (4x slower
    measured under load). Training test modules opt in with `pytestmark = pytest.mark.usefixtures(...)`."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def world_dir(tmp_path_factory) -> Path:
    from groundup.world.generate import main

    out = tmp_path_factory.mktemp("run") / "data"
    main(["--output_dir", str(out), *SMALL_WORLD])
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(world_dir) -> Path:
    from groundup.train.tokenizer import main

    out = world_dir.parent / "tokenizer"
    main(["--output_dir", str(out), "--dataset", str(world_dir), "--vocab_size", "512", "--heldout_documents", "20"])
    return out


@pytest.fixture(scope="session")
def tiny_model_dir(tokenizer_dir) -> Path:
    """An untrained 2-layer GPT-2 saved with the tokenizer: enough to test code paths that need *a* model."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    model = GPT2LMHeadModel(config)
    out = tokenizer_dir.parent / "random-model"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
