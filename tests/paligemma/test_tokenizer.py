"""Tokenizer: PaliGemma's id layout, big_vision's train/prompt encodings, the trained small tokenizer."""
import numpy as np
import pytest
import sentencepiece as spm

from components.paligemma.tokenizer import (BOS_ID, EOS_ID, NUM_LOC, NUM_SEG, PAD_ID, Tokenizer, loc_piece,
                                            parse_loc_pieces, seg_piece, train_small_tokenizer)


@pytest.fixture(scope="module")
def tok_path(tmp_path_factory):
  return train_small_tokenizer(str(tmp_path_factory.mktemp("tok") / "tokenizer.model"))


@pytest.fixture(scope="module")
def tok(tok_path):
  return Tokenizer(tok_path)


def test_layout_ids(tok):
  assert tok.vocab_size == 2048
  assert [tok.id_to_piece(i) for i in range(4)] == ["<pad>", "<eos>", "<bos>", "<unk>"]
  assert (tok.pad_id, tok.eos_id, tok.bos_id) == (0, 1, 2)
  # loc then seg pieces are the last 1152 ids, contiguous, in order.
  assert tok.loc_token_id(0) == 2048 - NUM_LOC - NUM_SEG
  assert tok.seg_token_id(0) == tok.loc_token_id(NUM_LOC - 1) + 1
  assert tok.seg_token_id(NUM_SEG - 1) == 2047
  assert [tok.id_to_piece(tok.loc_token_id(n)) for n in range(NUM_LOC)] == [loc_piece(n) for n in range(NUM_LOC)]
  assert [tok.id_to_piece(tok.seg_token_id(n)) for n in range(NUM_SEG)] == [seg_piece(n) for n in range(NUM_SEG)]
  assert tok.loc_bin(tok.loc_token_id(517)) == 517
  assert tok.loc_bin(tok.seg_token_id(0)) is None and tok.loc_bin(5) is None
  with pytest.raises(ValueError, match="1024"):
    tok.loc_token_id(1024)


def test_separator_and_loc_seg_are_single_pieces(tok):
  sep = tok.encode("\n")
  assert len(sep) == 1 and tok.id_to_piece(sep[0]) == "\n"
  ids = tok.encode("<loc0000><loc1023><seg000><seg127>")
  assert ids == [tok.loc_token_id(0), tok.loc_token_id(1023), tok.seg_token_id(0), tok.seg_token_id(127)]
  ids = tok.encode("<loc0012><loc0345><loc0678><loc0901> cat ; dog")
  assert ids[:4] == [tok.loc_token_id(n) for n in (12, 345, 678, 901)]
  assert 3 not in ids  # ";" and spaces are known pieces or bytes, never <unk>


@pytest.mark.parametrize("text", ["caption en", "detect red circle ; blue square",
                                  "<loc0001><loc0100><loc0200><loc1023> cat<seg005><seg127>",
                                  "answer en how many dogs?\n3", "naïve café 東京 ✓ 12345", "  two  spaces "])
def test_round_trip(tok, text):
  ids = tok.encode(text)
  assert 3 not in ids  # byte fallback: nothing becomes <unk>
  assert tok.decode(ids) == text


def test_encode_bos_eos(tok):
  ids = tok.encode("a cat")
  assert tok.encode("a cat", bos=True, eos=True) == [BOS_ID, *ids, EOS_ID]
  assert tok.encode("a cat", eos=True) == [*ids, EOS_ID] and BOS_ID not in ids and EOS_ID not in ids


def test_decode_stops_at_eos_and_drops_pad_bos(tok):
  ids = [BOS_ID] + tok.encode("a red circle") + [EOS_ID] + tok.encode("junk") + [PAD_ID] * 3
  assert tok.decode(ids) == "a red circle"
  assert tok.decode(np.array(ids, np.int32)) == "a red circle"
  assert tok.decode_batch(np.array([ids, [BOS_ID, EOS_ID] + [PAD_ID] * (len(ids) - 2)])) == ["a red circle", ""]


def test_loc_text_helpers():
  assert loc_piece(7) == "<loc0007>" and seg_piece(7) == "<seg007>"
  assert parse_loc_pieces("<loc0001><loc0100><loc0200><loc1023> cat ; <loc0005>") == [1, 100, 200, 1023, 5]
  with pytest.raises(ValueError):
    seg_piece(128)


def check_train_layout(text, mask_ar, mask_loss, sep_id):
  """The conventions of big_vision's training rows: [bos prefix sep | suffix eos | pad]."""
  n_ctx = int((mask_ar == 0).sum())  # bos + prefix + separator
  assert (mask_ar[:n_ctx] == 0).all() and (mask_ar[n_ctx:] == 1).all()  # 0s then 1s, padding included
  assert text[0] == BOS_ID and text[n_ctx - 1] == sep_id
  n_real = int((text != PAD_ID).sum())
  assert (text[:n_real] != PAD_ID).all() and text[n_real - 1] == EOS_ID
  assert (mask_loss[:n_ctx] == 0).all() and (mask_loss[n_ctx:n_real] == 1).all() and (mask_loss[n_real:] == 0).all()


def test_fixture_layout_conventions(bigvision_fixtures):
  """Our layout checker agrees with what big_vision itself fed its model (separator id 108 there)."""
  io = np.load(bigvision_fixtures / "tiny_v1.io.npz")
  for row in range(io["text"].shape[0]):
    check_train_layout(io["text"][row], io["mask_ar"][row], io["mask_loss"][row], sep_id=108)


def test_encode_train_hand_checked(tok):
  prefix, suffix = tok.encode("caption en"), tok.encode("a red circle")
  sep = tok.encode("\n")
  got = tok.encode_train("caption en", "a red circle", text_len=16)
  n_ctx, n_suf = 1 + len(prefix) + 1, len(suffix) + 1
  n_pad = 17 - n_ctx - n_suf
  expected_text = [BOS_ID, *prefix, *sep, *suffix, EOS_ID] + [0] * n_pad
  np.testing.assert_array_equal(got["text"], expected_text)
  np.testing.assert_array_equal(got["mask_ar"], [0] * n_ctx + [1] * (n_suf + n_pad))
  np.testing.assert_array_equal(got["mask_loss"], [0] * n_ctx + [1] * n_suf + [0] * n_pad)
  assert got["truncated"] is False
  assert all(got[k].dtype == np.int32 and got[k].shape == (17,) for k in ("text", "mask_ar", "mask_loss"))
  check_train_layout(got["text"], got["mask_ar"], got["mask_loss"], sep_id=sep[0])


def test_separator_is_encoded_separately(tok):
  """`sp(prefix) + sp("\\n")`, not `sp(prefix + "\\n")`: a prefix ending in a space keeps its own piece."""
  got = tok.encode_train("detect cat ", "x", text_len=20)
  expected = [BOS_ID, *tok.encode("detect cat "), *tok.encode("\n"), *tok.encode("x"), EOS_ID]
  np.testing.assert_array_equal(got["text"][:len(expected)], expected)


def test_encode_train_truncation_cuts_the_end(tok):
  suffix = "a large red circle and a small blue square in the corner"
  full = [BOS_ID, *tok.encode("caption en"), *tok.encode("\n"), *tok.encode(suffix), EOS_ID]
  n_ctx = 2 + len(tok.encode("caption en"))
  got = tok.encode_train("caption en", suffix, text_len=len(full) - 4)
  assert got["truncated"] is True
  np.testing.assert_array_equal(got["text"], full[:len(full) - 3])  # big_vision's tolen: no sticky eos
  assert EOS_ID not in got["text"]
  np.testing.assert_array_equal(got["mask_loss"], [0] * n_ctx + [1] * (len(full) - 3 - n_ctx))
  exact = tok.encode_train("caption en", suffix, text_len=len(full) - 1)  # fits exactly: text_len+1 == len
  assert exact["truncated"] is False and exact["text"][-1] == EOS_ID


def test_encode_prompt(tok):
  prefix = tok.encode("answer en how many cats?")
  got = tok.encode_prompt("answer en how many cats?", text_len=16)
  n = len(prefix) + 2
  np.testing.assert_array_equal(got["text"], [BOS_ID, *prefix, *tok.encode("\n")] + [0] * (16 - n))
  np.testing.assert_array_equal(got["mask_input"], [1] * n + [0] * (16 - n))
  np.testing.assert_array_equal(got["mask_ar"], np.zeros(16))
  assert got["truncated"] is False
  cut = tok.encode_prompt("answer en how many cats?", text_len=n - 1)
  assert cut["truncated"] is True and cut["text"].shape == (n - 1,) and (cut["mask_input"] == 1).all()


def test_batches_stack_examples(tok):
  prefixes, suffixes = ["caption en", "detect cat", "ocr"], ["a cat", "<loc0001><loc0002><loc0003><loc0004> cat",
                                                            "INVOICE No. 12 TOTAL $30.00 and much more text here"]
  batch = tok.encode_train_batch(prefixes, suffixes, text_len=12)
  for i, (p, s) in enumerate(zip(prefixes, suffixes)):
    one = tok.encode_train(p, s, text_len=12)
    for k in ("text", "mask_ar", "mask_loss"):
      np.testing.assert_array_equal(batch[k][i], one[k])
    assert batch["truncated"][i] == one["truncated"]
  assert batch["text"].shape == (3, 13) and batch["truncated"].dtype == bool and batch["truncated"].tolist() == [
      False, False, True]
  prompts = tok.encode_prompt_batch(prefixes, text_len=6)
  assert prompts["text"].shape == (3, 6) and prompts["mask_input"].sum(axis=1).tolist() == [
      min(6, len(tok.encode(p)) + 2) for p in prefixes]


def test_training_is_deterministic_and_sized(tmp_path):
  texts = ["a red circle", "a blue square", "detect cat ; dog", "caption en"] * 30
  a = train_small_tokenizer(str(tmp_path / "a.model"), texts, vocab_size=1500)
  b = train_small_tokenizer(str(tmp_path / "b.model"), texts, vocab_size=1500)
  c = train_small_tokenizer(str(tmp_path / "c.model"), texts + ["zebra giraffe elephant"] * 9, vocab_size=1500)
  bytes_a = open(a, "rb").read()
  assert bytes_a == open(b, "rb").read()
  assert bytes_a != open(c, "rb").read()
  small = Tokenizer(a)
  assert small.vocab_size == 1500 and small.seg_token_id(NUM_SEG - 1) == 1499
  assert small.decode(small.encode("detect cat ; dog")) == "detect cat ; dog"


def test_default_tokenizer_is_deterministic(tok_path, tmp_path):
  again = train_small_tokenizer(str(tmp_path / "again.model"))
  assert open(again, "rb").read() == open(tok_path, "rb").read()


def test_bad_inputs(tmp_path):
  with pytest.raises(ValueError, match="vocab_size"):
    train_small_tokenizer(str(tmp_path / "x.model"), vocab_size=1200)
  junk = tmp_path / "junk.model"
  junk.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="junk.model"):
    Tokenizer(str(junk))
  with pytest.raises(FileNotFoundError, match="missing.model"):
    Tokenizer(str(tmp_path / "missing.model"))
  # A sentencepiece model with sentencepiece's default ids (unk 0, bos 1, eos 2) is not PaliGemma's layout.
  spm.SentencePieceTrainer.train(sentence_iterator=iter(["a red circle", "a blue square"] * 20),
                                 model_prefix=str(tmp_path / "plain"), vocab_size=30, hard_vocab_limit=False,
                                 minloglevel=2)
  with pytest.raises(ValueError, match="pad/eos/bos"):
    Tokenizer(str(tmp_path / "plain.model"))


def test_reads_from_fsspec_urls(tok_path):
  """Paths go through fsspec (gs:// is gcsfs); the in-memory filesystem stands in for a bucket here."""
  import fsspec
  with fsspec.open("memory://bucket/tokenizer.model", "wb") as f:
    f.write(open(tok_path, "rb").read())
  remote = Tokenizer("memory://bucket/tokenizer.model")
  assert remote.encode("a red circle") == Tokenizer(tok_path).encode("a red circle")
