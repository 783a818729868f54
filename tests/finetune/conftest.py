"""Fixtures for the trainer's tests: a real small tokenizer and a synthetic dataset directory."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # importlib mode: make the helpers importable
from _finetune_helpers import COLOURS, write_dataset  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer_path(tmp_path_factory) -> str:
  from components.paligemma import train_small_tokenizer
  path = tmp_path_factory.mktemp("tok") / "tokenizer.model"
  texts = [f"caption en a {c} square" for c in COLOURS] * 50
  return train_small_tokenizer(str(path), texts=texts, vocab_size=2048)


@pytest.fixture(scope="session")
def dataset_dir(tmp_path_factory) -> str:
  return str(write_dataset(tmp_path_factory.mktemp("data")))

