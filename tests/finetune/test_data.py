"""The input pipeline over convert's ArrayRecord shards: big_vision's layout, seeded order that resumes
from a saved iterator state, multi-epoch reshuffling, per-host slices that add up to the global batch."""
import io

import numpy as np
import pytest
from PIL import Image

from components.finetune import data
from components.paligemma import Tokenizer


@pytest.fixture(scope="module")
def preprocess(tokenizer_path):
  return data.Preprocess(Tokenizer(tokenizer_path), image_size=28, text_len=12)


def _ids(batch) -> list:
  return [tuple(row) for row in batch["text"]]


def test_examples_have_big_visions_layout(preprocess, tokenizer_path, dataset_dir):
  it = data.train_iterator(dataset_dir, "train", preprocess, batch_size=4, seed=0, threads=2)
  batch = next(it)
  assert batch["image"].shape == (4, 28, 28, 3) and batch["image"].dtype == np.float32
  assert -1.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  tok = Tokenizer(tokenizer_path)
  for row in range(4):
    text, mask_loss = batch["text"][row], batch["mask_loss"][row]
    assert text.shape == (13,) and text[0] == tok.bos_id
    suffix = tok.decode(text[mask_loss == 1])
    assert suffix.startswith("a ") and suffix.endswith(" square")


def test_preprocess_image_is_bilinear_resize_to_minus_one_one():
  pixels = np.zeros((4, 4, 3), np.uint8)
  pixels[:, :, 0] = 255
  buf = io.BytesIO()
  Image.fromarray(pixels).save(buf, format="PNG")
  out = data.preprocess_image(buf.getvalue(), 8)
  np.testing.assert_allclose(out[..., 0], 1.0)
  np.testing.assert_allclose(out[..., 1:], -1.0)


def test_order_is_seeded_resumable_and_reshuffled_each_epoch(preprocess, dataset_dir):
  def make(seed):
    return data.train_iterator(dataset_dir, "train", preprocess, batch_size=8, seed=seed, threads=2)
  a, b = make(0), make(0)
  first = [_ids(next(a)) for _ in range(3)]
  assert first == [_ids(next(b)) for _ in range(3)]
  state = a.get_state()
  rest = [_ids(next(a)) for _ in range(10)]  # 13 batches of 8 from 64 examples: into the second epoch
  c = make(0)
  c.set_state(state)
  assert [_ids(next(c)) for _ in range(10)] == rest
  assert first[0] != _ids(next(make(1)))
  order1 = sum(first + rest[:5], [])  # batches 0-7: exactly the 64 training examples
  split = _ids(next(data.eval_batches(dataset_dir, "train", preprocess, batch_size=64, threads=2)))
  assert sorted(order1) == sorted(split)
  order2 = sum(rest[5:], [])
  assert order2 != order1[:len(order2)]  # the second epoch is shuffled differently


def test_host_slices_make_up_the_global_batch(preprocess, dataset_dir):
  whole = next(data.train_iterator(dataset_dir, "train", preprocess, batch_size=8, seed=3, threads=2))
  parts = [next(data.train_iterator(dataset_dir, "train", preprocess, batch_size=8, seed=3, threads=2,
                                    process_index=i, process_count=2)) for i in range(2)]
  assert all(len(p["text"]) == 4 for p in parts)
  assert sorted(_ids(whole)) == sorted(_ids(parts[0]) + _ids(parts[1]))


def test_eval_batches_cover_the_split_once_with_padding(preprocess, dataset_dir):
  batches = list(data.eval_batches(dataset_dir, "valid", preprocess, batch_size=5, threads=2))
  assert len(batches) == 3  # 12 examples in batches of 5
  assert [int(b["valid"].sum()) for b in batches] == [5, 5, 2]
  assert all(b["text"].shape == (5, 13) for b in batches)
  assert batches[-1]["mask_loss"][2:].sum() == 0
