"""The official VQA accuracy (Antol et al. 2015; GT-Vision-Lab/VQA `vqaEval.py`) and its answer normalisation.

Written out here because the official code ships only as a script inside the VQA API repository, not
as a package. Normalisation, in the official order: newlines/tabs to spaces and trim; punctuation
(`processPunctuation`: each mark is deleted if it touches a space or the text has a digit-comma-digit,
else replaced by a space; periods not followed by a digit are deleted); then lower-case, number words
to digits, articles dropped, contractions restored (`processDigitArticle`).

Where we differ, and why:
- References are normalised exactly like predictions. The official script only strips punctuation from
  its answers, because VQA's annotations were normalised when collected; a user's data is not.
- The contraction table maps the apostrophe-free spelling of each contraction to its official form;
  the official table also has a few half-apostrophed keys (`couldn'tve`) that normalisation never
  produces from ASCII text.
- Accuracy with k reference answers: the official leave-one-out average of min(1, matches / 3) needs
  k >= 4 (VQA has 10) to mean anything: with a single answer it is always 0. With k <= 3 answers we
  use min(1, matches / k), which is exact match of the normalised answers when k == 1.
"""
from __future__ import annotations

import re
from typing import Sequence

_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset(("a", "an", "the"))
_PUNCT = (";", ":", "/", "'", "[", "]", '"', "(", ")", "=", "+", "\\", "_", ">", "<", "@", "`", ",", "?")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic: the official pattern (its look-behind is a look-ahead)
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
# The official forms (with a typographic apostrophe, as in vqaEval.py) of the contractions it restores.
_CONTRACTED = """ain't aren't can't could've couldn't couldn’t’ve didn’t doesn’t don’t hadn’t hadn’t’ve hasn’t
haven’t he’d he’d’ve he’s how’d how’ll how’s I’d’ve I’m I’ve isn’t it’d it’d’ve it’ll let’s ma’am mightn’t
mightn’t’ve might’ve mustn’t must’ve needn’t not’ve o’clock oughtn’t ’ow’s’at shan’t she’d’ve she’s should’ve
shouldn’t shouldn’t’ve somebody’d’ve somebody’ll somebody’s someone’d someone’d’ve someone’ll someone’s
something’d something’d’ve something’ll that’s there’d there’d’ve there’re there’s they’d they’d’ve they’ll
they’re they’ve ’twas wasn’t we’d’ve we've weren’t what’ll what’re what’s what’ve when’s where’d where's
where’ve who’d who’d’ve who’ll who’s who've why’ll why’re why’s won’t would’ve wouldn’t wouldn’t’ve y’all
y’all’ll y’all’d’ve you’d you’d’ve you’ll you’re you’ve""".split()
_CONTRACTIONS = {w.replace("’", "").replace("'", ""): w for w in _CONTRACTED}


def _process_punctuation(text: str) -> str:
  out = text
  for p in _PUNCT:
    if p + " " in text or " " + p in text or _DIGIT_COMMA_DIGIT.search(text):
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD.sub("", out)


def _process_digit_article(text: str) -> str:
  words = [_NUMBERS.get(w, w) for w in text.lower().split()]
  return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(answer: str) -> str:
  """An answer as the official VQA evaluation compares it."""
  answer = answer.replace("\n", " ").replace("\t", " ").strip()
  return _process_digit_article(_process_punctuation(answer))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
  """The VQA accuracy of one prediction against the reference answers (see the module note for k <= 3)."""
  if not answers:
    raise ValueError("vqa_accuracy needs at least one reference answer")
  pred = normalize_answer(prediction)
  refs = [normalize_answer(a) for a in answers]
  if len(refs) <= 3:
    return min(1.0, sum(r == pred for r in refs) / len(refs))
  # Official: average over the k leave-one-out subsets of min(1, matches among the others / 3).
  matches = sum(r == pred for r in refs)
  return sum(min(1.0, (matches - (r == pred)) / 3) for r in refs) / len(refs)
