"""Tokenizer and image-processor files beside a transformers checkpoint, so that
`PaliGemmaProcessor.from_pretrained(dir)` turns an image and a prompt into exactly our model's inputs.

- Tokenizer: transformers' `GemmaTokenizer` (BPE with byte fallback, tokenizers-backed) built from our
  sentencepiece `tokenizer.model`, which is copied too. transformers would convert the file itself, but
  it reads it through sentencepiece's bundled protobuf module, which refuses the protobuf 6 that
  google-cloud pins; transformers' own copy of the schema parses it fine, so we hand it the pieces.
  The processor appends `<image>` (id = our vocab size, the model's `image_token_index`).
- Image processor: resize to the model's square resolution (bilinear, as big_vision), scale to [-1, 1]
  (x/255 - 0.5)/0.5 = x/127.5 - 1), `image_seq_length` = number of image tokens.
"""
from __future__ import annotations

import pathlib
import shutil

from components.common.extras import require


NEEDED_BY = "export --export-format hf (the tokenizer and processor files; torch is not needed)"


def write_processor(tokenizer_model: str | pathlib.Path, out_dir: str | pathlib.Path, *, image_size: int,
                    num_image_tokens: int) -> None:
  """Writes tokenizer.json, tokenizer_config.json, tokenizer.model, processor_config.json and
  preprocessor_config.json into `out_dir`."""
  transformers = require("transformers", extra="hf", needed_by=NEEDED_BY)
  from transformers.tokenization_utils_base import AddedToken, generate_merges
  from transformers.utils import sentencepiece_model_pb2_new as sentencepiece_pb2
  out_dir = pathlib.Path(out_dir)
  proto = sentencepiece_pb2.ModelProto()
  proto.ParseFromString(pathlib.Path(tokenizer_model).read_bytes())
  if proto.trainer_spec.model_type != 2:  # sentencepiece's BPE; Gemma's tokenizer is BPE
    raise ValueError(f"{tokenizer_model}: a {proto.trainer_spec.model_type} sentencepiece model; PaliGemma's "
                     "tokenizer (and transformers' GemmaTokenizer) is BPE")
  vocab = {piece.piece: i for i, piece in enumerate(proto.pieces)}
  if "\t" not in vocab and "<0x09>" in vocab:  # as transformers' Gemma converter: lets merges reach a tab
    vocab["\t"] = vocab["<0x09>"]
  control, user = 3, 4  # ModelProto.SentencePiece.Type: control and user-defined pieces stay whole
  special = [AddedToken(p.piece, normalized=False, special=p.type == control)
             for p in proto.pieces if p.type in (control, user)]
  # Gemma's vocabulary has <mask>; a tokenizer without it must not grow one (it would take <image>'s id).
  tokenizer = transformers.GemmaTokenizer(vocab=vocab, merges=generate_merges(vocab), additional_special_tokens=special,
                                          mask_token="<mask>" if "<mask>" in vocab else None)
  image_processor = transformers.SiglipImageProcessorPil(
      size={"height": image_size, "width": image_size}, resample=2,  # PIL bilinear
      do_rescale=True, rescale_factor=1 / 255, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3,
      do_convert_rgb=True)
  image_processor.image_seq_length = num_image_tokens
  processor = transformers.PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)
  processor.save_pretrained(out_dir)
  image_processor.save_pretrained(out_dir)  # preprocessor_config.json, which transformers 4.x reads
  if pathlib.Path(tokenizer_model).resolve() != (out_dir / "tokenizer.model").resolve():
    shutil.copyfile(tokenizer_model, out_dir / "tokenizer.model")
