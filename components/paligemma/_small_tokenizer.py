"""A small but real sentencepiece model with PaliGemma's layout, for tests and the offline demo.

Layout: pad 0, eos 1, bos 2, unk 3, "\n" 4 (the separator, one piece), 256 byte-fallback pieces (any text
encodes without unk, as in Gemma), learned pieces, `<unusedN>` fillers when the corpus is too small to
learn `vocab_size - 1152` pieces (Gemma's vocabulary has `<unusedN>` too), then the 1024 `<locNNNN>`
and 128 `<segNNN>` pieces last, so their ids are contiguous. Gemma-like options: identity normalisation,
no dummy prefix, whitespace kept, digits split.

sentencepiece places user-defined symbols right after the special ids, so the loc/seg pieces are
appended to the trained model afterwards. We append them in protobuf wire format instead of editing the
model with sentencepiece's bundled `sentencepiece_model_pb2`: that module is generated for protobuf 7
and refuses to import under the protobuf 6 that google-cloud pins. Appending repeated-field entries to a
serialized message is valid protobuf (the parser concatenates them in order).
"""
from __future__ import annotations

import io
import itertools
import struct
from typing import Iterable

from components.common.atomic import write_atomic

NUM_LOC, NUM_SEG = 1024, 128
_SPECIALS = 4 + 1 + 256  # pad/eos/bos/unk, "\n", byte pieces
MIN_VOCAB_SIZE = _SPECIALS + 16 + NUM_LOC + NUM_SEG  # the smallest vocab_size train_small_tokenizer accepts
_CONTROL, _USER_DEFINED = 3, 4  # ModelProto.SentencePiece.Type


def train_small_tokenizer(out_path: str, texts: Iterable[str] | None = None, vocab_size: int = 2048) -> str:
  """Trains a BPE sentencepiece model on `texts` (default: a built-in English corpus) and writes it.

  Deterministic: the same texts and vocab_size give the same bytes. Returns out_path.
  """
  learned = vocab_size - NUM_LOC - NUM_SEG
  if vocab_size < MIN_VOCAB_SIZE:
    raise ValueError(f"vocab_size {vocab_size} is too small: it must hold {_SPECIALS} special/byte pieces, "
                     f"at least 16 learned pieces and {NUM_LOC + NUM_SEG} loc/seg pieces "
                     f"(use >= {MIN_VOCAB_SIZE})")
  sentences = list(default_corpus() if texts is None else texts)
  if not any(s.strip() for s in sentences):
    raise ValueError("train_small_tokenizer needs some non-empty texts")
  import sentencepiece as spm  # here, not at import: building and running the model needs no tokenizer

  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences), model_writer=model, vocab_size=learned,
      model_type="bpe", character_coverage=1.0,  # as Gemma: BPE, every character of the corpus a piece
      pad_id=0, eos_id=1, bos_id=2, unk_id=3,
      pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
      user_defined_symbols=["\n"], byte_fallback=True, split_digits=True,
      normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=False,
      hard_vocab_limit=False,  # a small corpus may not support `learned` pieces: fill with <unusedN>
      num_threads=1,  # one thread: ties and sums in a fixed order, the same bytes every run
      max_sentence_length=1 << 16, minloglevel=2)
  model_bytes = model.getvalue()
  trained = _piece_count(model_bytes)
  extra = [_piece(f"<unused{i}>", _CONTROL) for i in range(learned - trained)]
  # No learned piece can equal these: split_digits keeps digits out of learned pieces.
  extra += [_piece(f"<loc{i:04d}>", _USER_DEFINED) for i in range(NUM_LOC)]
  extra += [_piece(f"<seg{i:03d}>", _USER_DEFINED) for i in range(NUM_SEG)]
  write_atomic(out_path, lambda f: f.write(model_bytes + b"".join(extra)))
  return out_path


def _piece_count(model_bytes: bytes) -> int:
  import sentencepiece as spm

  sp = spm.SentencePieceProcessor()
  sp.LoadFromSerializedProto(model_bytes)
  return sp.GetPieceSize()


def _varint(n: int) -> bytes:
  out = bytearray()
  while True:
    byte, n = n & 0x7F, n >> 7
    out.append(byte | (0x80 if n else 0))
    if not n:
      return bytes(out)


def _piece(text: str, piece_type: int) -> bytes:
  """One `ModelProto.pieces` entry (field 1): SentencePiece{piece=1: text, score=2: 0.0, type=3}."""
  raw = text.encode()
  body = b"\x0a" + _varint(len(raw)) + raw + b"\x15" + struct.pack("<f", 0.0) + b"\x18" + _varint(piece_type)
  return b"\x0a" + _varint(len(body)) + body


# A built-in corpus in the words of PaliGemma's tasks, generated from word lists so it stays short here.
_COLOURS = "red green blue yellow orange purple pink brown black white gray gold silver".split()
_SHAPES = "circle square triangle rectangle star hexagon ellipse diamond line dot cross arrow heart".split()
_OBJECTS = ("person man woman child boy girl cat dog bird horse sheep cow elephant bear zebra giraffe car bus "
            "truck bicycle motorcycle train boat airplane chair couch table bed bottle cup glass bowl plate fork "
            "knife spoon book phone laptop keyboard mouse television clock vase tree flower plant house building "
            "road street sign window door bag umbrella kite ball pizza sandwich apple banana cake shape object "
            "animal vehicle food").split()
_SIZES = "small large big tiny huge little".split()
_PLACES = "left right top bottom center middle corner edge front back".split()
_VERBS = "sitting standing walking running lying eating holding riding playing looking parked flying".split()
_NUMBERS = "zero one two three four five six seven eight nine ten".split()
_SENTENCES = """The quick brown fox jumps over the lazy dog.
A picture is worth a thousand words, but a caption helps us understand it.
This image shows several objects arranged on a wooden table near the window.
How many people are in the photograph? There are three people in the photograph.
Is there a dog in the picture? Yes, there is a dog lying on the grass. No, there is not.
What is written on the sign? The sign says "stop" (in capital letters).
The document contains a title, a date and a short paragraph of text; read it carefully.
Please describe the scene in one sentence: what, where, and how many?
The weather is sunny and the sky is clear with a few white clouds.
A group of friends is having dinner at a restaurant in the evening!""".split("\n")


def default_corpus() -> list[str]:
  """Prompts (`caption en`, `detect`, `answer en`, `ocr`, `segment`) and answers about objects and shapes."""
  out = ["caption en", "ocr", "answer en", "detect", "segment"] * 20 + _SENTENCES
  out += [f"a {s} {c} {sh}" for s, c, sh in itertools.product(_SIZES, _COLOURS, _SHAPES)]
  out += [f"the {c} {sh} is in the {p} of the image" for c, sh, p in itertools.product(_COLOURS, _SHAPES, _PLACES)]
  out += [f"{n} {o}s {v}" for o, v, n in itertools.product(_OBJECTS, _VERBS, _NUMBERS)]
  for i, o in enumerate(_OBJECTS):
    other = _OBJECTS[(i + 7) % len(_OBJECTS)]
    out += [f"caption en\na photo of a {o}", f"detect {o} ; {other}", f"segment {o}",
            f"answer en how many {o}s are there?", f"answer en what color is the {o}?",
            f"<loc{i * 13 % 1024:04d}><loc{i * 29 % 1024:04d}><loc{i * 41 % 1024:04d}><loc{i * 53 % 1024:04d}> {o}"]
  out += [f"ocr\nINVOICE No. {i * 37 % 1000} TOTAL ${i * 13 % 500}.{i % 100:02d} "
          f"20{i % 30:02d}-{i % 12 + 1:02d}-{i % 28 + 1:02d}" for i in range(200)]
  return out
