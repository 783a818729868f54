"""The trainer fitted to its data: text_len 0 sized from the training examples' token lengths (counted as
convert's report counts them), a set text_len that truncates examples said in one WARNING with their
number, and one overfitting warning when validation loss parts from training loss."""
import json
import logging

import numpy as np
import pytest

from components.finetune import data, overfit
from components.finetune.config import ConfigError, load_config, validate
from components.paligemma import Tokenizer


def _write_jsonl(path, suffixes):
  with open(path, "w") as f:
    for s in suffixes:
      f.write(json.dumps({"image": "x.png", "prefix": "caption en", "suffix": s}) + "\n")


def test_token_lengths_count_the_whole_training_sequence(tmp_path, tokenizer_path):
  tok = Tokenizer(tokenizer_path)
  suffixes = ["a red square", "a blue square " * 10]
  _write_jsonl(tmp_path / "train.jsonl", suffixes)
  lengths = data.token_lengths(str(tmp_path), "train", tok)
  # bos + prefix + "\n" + suffix + eos
  assert lengths.tolist() == [1 + len(tok.encode("caption en")) + 1 + len(tok.encode(s)) + 1 for s in suffixes]
  assert data.token_lengths(str(tmp_path), "valid", tok) is None  # no JSONL: nothing to measure


def test_text_len_zero_fits_the_longest_example_rounded_up(caplog):
  lengths = np.array([10, 12, 53])
  with caplog.at_level(logging.INFO, "components.finetune"):
    text_len = data.fit_text_len(0, lengths)
  assert text_len == 56 and text_len % data.TEXT_LEN_MULTIPLE == 0
  assert text_len + 1 >= 53 and text_len - data.TEXT_LEN_MULTIPLE + 1 < 53  # the smallest multiple that fits
  assert "text_len 56 from the data" in caplog.text and not any(r.levelno >= logging.WARNING for r in caplog.records)
  with pytest.raises(ValueError, match="set config.text_len"):
    data.fit_text_len(0, None)


def test_a_set_text_len_that_truncates_warns_with_the_count(caplog):
  lengths = np.array([20, 25, 30, 52, 52])
  with caplog.at_level(logging.INFO, "components.finetune"):
    assert data.fit_text_len(24, lengths) == 24  # kept: the user chose it
  warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
  assert len(warnings) == 1
  assert "text_len 24 truncates 3 of 5 training examples" in warnings[0] and "set text_len 56" in warnings[0]
  caplog.clear()
  with caplog.at_level(logging.INFO, "components.finetune"):
    assert data.fit_text_len(51, lengths) == 51  # 52 tokens = text_len + 1: nothing cut
  assert not caplog.records


def test_negative_text_len_is_a_config_error():
  config = load_config("components/finetune/configs/template.py")
  config.text_len = -1
  with pytest.raises(ConfigError, match="text_len"):
    validate(config)


def test_overfitting_warning_when_validation_rises_while_training_falls():
  history = [overfit.Point(100, 2.0, 2.1), overfit.Point(200, 1.0, 1.5), overfit.Point(300, 0.2, 2.4)]
  message = overfit.warning(history)
  assert message.startswith("overfitting: validation loss rose from 1.500 (step 200) to 2.400 (step 300)")


def test_overfitting_warning_when_validation_is_far_above_training_at_the_end():
  message = overfit.warning([overfit.Point(20, 0.003, 6.8)])  # the 32 images: loss 0.003, val 6.8
  assert message and "validation loss 6.800" in message and "training loss 0.003" in message


@pytest.mark.parametrize("history", [
    [],
    [overfit.Point(100, 2.0, 2.1), overfit.Point(200, 1.0, 1.2), overfit.Point(300, 0.8, 1.0)],  # both fall
    [overfit.Point(100, 0.05, 0.2)],  # a large ratio of tiny losses: no news
    [overfit.Point(100, 1.0, 1.1), overfit.Point(200, 1.2, 1.9)],  # both rise: not overfitting (diverging)
])
def test_no_overfitting_warning_for_a_healthy_run(history):
  assert overfit.warning(history) is None
