"""Fixtures for the evaluation tests: a tiny random PaliGemma saved as a model directory, and a small
dataset directory in the convert step's layout (images + valid.jsonl)."""
import json
import os

import numpy as np
import pytest
from PIL import Image

TINY = "tiny-v1"
VOCAB = 2048  # the small trained tokenizer's


def write_dataset(root, rows, size=(64, 48)):
  """Writes a dataset directory: one solid-colour image (with a darker square) per distinct image name."""
  os.makedirs(os.path.join(root, "images"), exist_ok=True)
  rng = np.random.default_rng(0)
  for name in dict.fromkeys(r["image"] for r in rows):
    pixels = np.empty((size[1], size[0], 3), np.uint8)
    pixels[:] = rng.integers(60, 200, size=3)
    y, x = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
    pixels[y:y + size[1] // 3, x:x + size[0] // 3] //= 2
    Image.fromarray(pixels).save(os.path.join(root, name))
  with open(os.path.join(root, "valid.jsonl"), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in rows)
  return str(root)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
  """DIR/tiny.npz + model.json + tokenizer.model: a random tiny-v1 with the small tokenizer's vocabulary."""
  import jax
  import jax.numpy as jnp
  from components import paligemma

  root = tmp_path_factory.mktemp("model")
  paligemma.train_small_tokenizer(str(root / "tokenizer.model"))
  model_cfg = paligemma.configs.model_config(TINY)
  model_cfg["llm"]["vocab_size"] = VOCAB
  # An f32 KV cache: the 1-vs-8-device test then holds log-probs to f32 noise, not bf16 rounding.
  model_cfg["llm"]["cache_dtype"] = "float32"
  model = paligemma.Model(**model_cfg)
  size = paligemma.configs.image_size(model_cfg)
  params = model.init(jax.random.key(0), jnp.zeros((1, size, size, 3)), jnp.zeros((1, 4), jnp.int32),
                      jnp.zeros((1, 4), jnp.int32))["params"]
  # Spread the logits so that greedy choices are not near-ties decided by the last float bit.
  params = jax.tree.map(lambda x: np.asarray(x) * 3.0, params)
  paligemma.save(params, str(root / "tiny.npz"))
  (root / "model.json").write_text(json.dumps({**model_cfg, "name": TINY, "checkpoint": "tiny.npz"}))
  return str(root)


DETECT_ROWS = [
    {"image": f"images/{i}.png", "prefix": "detect cat ; dog",
     "suffix": "<loc0100><loc0200><loc0500><loc0600> cat" + (" ; <loc0300><loc0300><loc0900><loc0800> dog" if i % 2 else "")}
    for i in range(11)
]


@pytest.fixture
def detect_dataset(tmp_path):
  return write_dataset(tmp_path / "data", DETECT_ROWS)


@pytest.fixture
def make_dataset():
  """`make_dataset(root, rows)` writes a dataset directory with an image for each row (see write_dataset)."""
  return write_dataset
