"""The official VQA accuracy (Antol et al. 2015; GT-Vision-Lab/VQA `vqaEval.py`) and its answer normalisation.

Written out here because the official code ships only as a script inside the VQA API repository, not
as a package. The tables (`punct`, `contractions`, `manualMap`, `articles`) and both regular expressions
are copied verbatim from vqaEval.py, quirks included, and applied in its order:
  newlines/tabs to spaces, trim;
  `processPunctuation`: each mark of `punct` is deleted if it touches a space anywhere in the text or the
    text has a digit-comma-digit, else replaced by a space; then `periodStrip` deletes periods not
    followed by a digit (its look-behind is written as a look-ahead, so it never looks behind, and
    vqaEval.py passes re.UNICODE (32) as `count`, so at most 32 are deleted);
  `processDigitArticle`: lower-case, number words to digits (`manualMap`), articles dropped, then
    contractions restored (`contractions`; apostrophes are not in `punct`, so "can't" stays "can't" and
    "cant" becomes "can't"). Keys the lower-casing never produces (`Im`, `Ive`) are kept as the script has them.
The compared strings are lower-cased, as vqaEval.py compares them.

Where we differ, and why:
- References are always normalised like predictions. vqaEval.py normalises answers only when the human
  answers of a question disagree, because VQA's annotations were cleaned when collected; a user's are
  not, and with a single reference "yes!" would otherwise never match "yes".
- Accuracy with k reference answers: the official leave-one-out average of min(1, matches / 3) needs
  k >= 4 (VQA has 10) to mean anything: with a single answer it is always 0. With k <= 3 answers we
  use min(1, matches / k), which is exact match of the normalised answers when k == 1.
"""
from __future__ import annotations

import re
from typing import Sequence

# vqaEval.py's `manualMap`, `articles`, `punct`, `periodStrip`, `commaStrip`, `contractions`.
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_ARTICLES = frozenset(("a", "an", "the"))
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?",
          "!")
_PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # sic, see the module note
_PERIOD_COUNT = re.UNICODE  # sic: vqaEval.py passes the flag where `count` goes
_DIGIT_COMMA_DIGIT = re.compile(r"(\d)(,)(\d)")
_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've",
    "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's",
    "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've",
    "mightve": "might've", "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's",
    "shouldve": "should've", "shouldnt": "shouldn't", "shouldnt've": "shouldn't've",
    "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd", "somebodyd've": "somebody'd've",
    "somebody'dve": "somebody'd've", "somebodyll": "somebody'll", "somebodys": "somebody's",
    "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas",
    "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't",
    "whatll": "what'll", "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's",
    "whered": "where'd", "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll",
    "whyre": "why're", "whys": "why's", "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't",
    "wouldnt've": "wouldn't've", "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll",
    "y'allll": "y'all'll", "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're",
    "youve": "you've"}


def _process_punctuation(text: str) -> str:
  out = text
  for p in _PUNCT:
    if p + " " in text or " " + p in text or _DIGIT_COMMA_DIGIT.search(text):
      out = out.replace(p, "")
    else:
      out = out.replace(p, " ")
  return _PERIOD.sub("", out, _PERIOD_COUNT)


def _process_digit_article(text: str) -> str:
  words = [_NUMBERS.get(w, w) for w in text.lower().split()]
  return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def normalize_answer(answer: str) -> str:
  """An answer as the official VQA evaluation compares it."""
  answer = answer.replace("\n", " ").replace("\t", " ").strip()
  return _process_digit_article(_process_punctuation(answer)).lower()


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
