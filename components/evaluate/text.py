"""Text metrics for captioning, VQA and OCR answers.

- CIDEr: pycocoevalcap's `Cider` (CIDEr-D: sigma 6, clipped counts, x10 scale as in coco-caption).
  coco-caption feeds it text from the Stanford PTB tokenizer, a Java program; we tokenise in Python
  the way its output looks (lower case, punctuation dropped, `'s`-style clitics split off) so the step
  needs no Java. Document frequencies come from the references of the set being scored, as in
  coco-caption: on a one-image set every n-gram is in every document and CIDEr is 0 by construction.
- BLEU-4: sacrebleu's corpus BLEU (13a tokenisation, variable number of references), divided by 100
  so that every metric we report is a fraction.
- Exact match: the prediction equals some reference after trimming and collapsing whitespace (case kept).
- ANLS (Biten et al. 2019): per example, the best over references of 1 - normalised Levenshtein distance
  (lower-cased, whitespace-collapsed), 0 where that distance is 0.5 or more; averaged.
- CER: corpus character error rate, sum of edit distances / sum of reference lengths, each prediction
  against its closest reference (rapidfuzz's Levenshtein, the same counts as jiwer).
"""
from __future__ import annotations

import re
from typing import Sequence

import sacrebleu
from rapidfuzz.distance import Levenshtein

from components.common.extras import require

ANLS_THRESHOLD = 0.5
_PTB_LIKE = re.compile(r"'\w+|\w+")


def _squash(text: str) -> str:
  return " ".join(text.split())


def caption_tokens(text: str) -> str:
  return " ".join(_PTB_LIKE.findall(text.lower()))


def cider(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
  """Corpus CIDEr-D and the per-example scores."""
  if not predictions:
    return 0.0, []
  gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references)}
  res = {i: [caption_tokens(p)] for i, p in enumerate(predictions)}
  cider_module = require("pycocoevalcap.cider.cider", extra="caption", needed_by="caption scoring (CIDEr)")
  score, scores = cider_module.Cider().compute_score(gts, res)
  return float(score), [float(s) for s in scores]


def bleu4(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> float:
  """Corpus BLEU-4 as a fraction."""
  if not predictions:
    return 0.0
  n_streams = max(len(refs) for refs in references)
  # sacrebleu wants reference *streams*; rows with fewer references pad theirs with None.
  streams = [[refs[j] if j < len(refs) else None for refs in references] for j in range(n_streams)]
  return float(sacrebleu.corpus_bleu(list(predictions), streams).score) / 100


def exact_match(prediction: str, references: Sequence[str]) -> float:
  return float(any(_squash(prediction) == _squash(r) for r in references))


def anls(prediction: str, references: Sequence[str]) -> float:
  pred = _squash(prediction).lower()
  best = 0.0
  for ref in references:
    ref = _squash(ref).lower()
    distance = Levenshtein.normalized_distance(pred, ref) if (pred or ref) else 0.0
    best = max(best, 1.0 - distance if distance < ANLS_THRESHOLD else 0.0)
  return best


def char_errors(prediction: str, references: Sequence[str]) -> tuple[int, int]:
  """(edit distance, reference length) against the closest reference: the two sums CER divides."""
  return min(((Levenshtein.distance(prediction, r), len(r)) for r in references), key=lambda e: e[0])
