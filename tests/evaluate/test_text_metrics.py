"""Caption, VQA and OCR scoring."""

import pytest
import sacrebleu

from components.evaluate import normalize_answer, score, vqa_accuracy
from components.evaluate import text


def rows(prefix, pairs):
  refs = [{"image": f"{i}.jpg", "prefix": prefix, "suffix": r} for i, (_, rs) in enumerate(pairs) for r in rs]
  preds = [{"image": f"{i}.jpg", "prefix": prefix, "prediction": p} for i, (p, _) in enumerate(pairs)]
  return preds, refs


# Expected values worked out by hand from vqaEval.py's rules (GT-Vision-Lab/VQA), not from our code.
@pytest.mark.parametrize("raw, want", [
    ("Two dogs.", "2 dogs"),  # period not before a digit deleted; manualMap
    ("the cat", "cat"), ("A man, a plan", "man plan"),  # articles; "," touches a space: deleted
    ("1,000", "1000"),  # digit-comma-digit: every mark deleted
    ("it's red", "it's red"),  # the apostrophe is not in `punct`
    ("dont", "don't"), ("cant", "can't"), ("can't", "can't"),  # contractions restored, ASCII apostrophe
    ("  Yes\n", "yes"), ("none", "0"), ("3.5 m", "3.5 m"),
    ("yes!", "yes"),  # "!" touches no space: replaced by a space, then split away
    ("t-shirt", "t shirt"), ("3:00", "3:00"),  # "-" is in `punct`, ":" is not
    ("Hello, world!", "hello world"), ("{x}", "x"),
])
def test_vqa_normalisation(raw, want):
  assert normalize_answer(raw) == want


def test_vqa_accuracy_ten_answers_is_the_official_leave_one_out():
  answers = ["2"] * 2 + ["two"] + ["3"] * 7  # "two" normalises to "2": three humans said it
  for pred in ("2", "Two", "3", "4"):
    matches = [normalize_answer(a) == normalize_answer(pred) for a in answers]
    want = sum(min(1, sum(m for j, m in enumerate(matches) if j != i) / 3) for i in range(10)) / 10
    assert vqa_accuracy(pred, answers) == pytest.approx(want)
  assert vqa_accuracy("two", answers) == pytest.approx(0.9) and vqa_accuracy("3", answers) == 1.0


def test_vqa_accuracy_single_answer_is_normalised_exact_match():
  assert vqa_accuracy("The Dog.", ["dog"]) == 1.0 and vqa_accuracy("cat", ["dog"]) == 0.0


@pytest.mark.parametrize("pred, ref", [("yes!", "yes"), ("t-shirt", "t shirt"), ("can't", "cant"),
                                       ("Ten.", "10"), ("a T-Shirt", "t shirt")])
def test_vqa_accuracy_official_equivalences(pred, ref):
  assert vqa_accuracy(pred, [ref]) == 1.0 and vqa_accuracy(ref, [pred]) == 1.0


def test_vqa_accuracy_keeps_official_distinctions():
  assert vqa_accuracy("its", ["it's"]) == 0.0  # "its" is not a contraction key
  assert vqa_accuracy("3:00", ["300"]) == 0.0  # ":" is not punctuation to vqaEval.py


def test_vqa_task_metrics():
  preds, refs = rows("answer en how many?", [("Two", ["2"]), ("red", ["red"]), ("", ["blue"])])
  metrics, records = score("vqa", preds, refs)
  assert metrics["accuracy"] == pytest.approx(2 / 3)
  assert metrics["exact_match"] == pytest.approx(1 / 3)  # "Two" != "2" before normalisation
  assert metrics["anls"] == pytest.approx(1 / 3)
  assert [r["score"] for r in records] == [1.0, 1.0, 0.0]


def test_anls_and_cer():
  assert text.anls("Hellx", ["hello"]) == pytest.approx(0.8)
  assert text.anls("abcd", ["wxyz", "abce"]) == pytest.approx(0.75)  # best reference
  assert text.anls("abcd", ["ab"]) == 0.0  # distance 0.5: at the threshold counts as wrong
  preds, refs = rows("ocr", [("helo world", ["hello world"]), ("ABC", ["abc"]), ("", ["xy"])])
  metrics, _ = score("ocr", preds, refs)
  assert metrics["cer"] == pytest.approx((1 + 3 + 2) / (11 + 3 + 2))
  assert metrics["exact_match"] == 0.0
  assert metrics["anls"] == pytest.approx(((1 - 1 / 11) + 1 + 0) / 3)


def test_caption_metrics():
  pairs = [("a dog runs on the grass", ["a dog running on the grass", "a brown dog outside"]),
           ("two people at a table", ["two people sitting at a table"]),
           ("a red car", ["a red car parked on a street", "a car"])]
  preds, refs = rows("caption en", pairs)
  metrics, records = score("caption", preds, refs)
  # sacrebleu with explicit reference streams (None where a row has fewer references)
  streams = [[rs[j] if j < len(rs) else None for _, rs in pairs] for j in range(2)]
  assert metrics["bleu4"] == pytest.approx(sacrebleu.corpus_bleu([p for p, _ in pairs], streams).score / 100)
  assert metrics["cider"] == pytest.approx(sum(r["score"] for r in records) / 3)
  perfect, _ = score("caption", *rows("caption en", [(rs[0], rs) for _, rs in pairs]))
  wrong, _ = score("caption", *rows("caption en", [("zebra zebra", rs) for _, rs in pairs]))
  assert perfect["cider"] > metrics["cider"] > wrong["cider"] == 0.0
  assert perfect["bleu4"] == pytest.approx(1.0)


def test_caption_tokens_look_like_ptb():
  assert text.caption_tokens("A dog's bone, on the GRASS!") == "a dog 's bone on the grass"


def test_several_reference_rows_are_several_answers_and_missing_predictions_count():
  refs = [{"image": "a", "prefix": "answer en q", "suffix": s} for s in ["yes"] * 3 + ["no"] * 7]
  refs.append({"image": "b", "prefix": "answer en q", "suffix": "x"})
  metrics, _ = score("vqa", [{"image": "a", "prefix": "answer en q", "prediction": "yes"}], refs)
  assert metrics["num_examples"] == 2 and metrics["missing_predictions"] == 1
  assert metrics["accuracy"] == pytest.approx(0.9 / 2)


def test_duplicate_prediction_rows_are_an_error():
  preds = [{"image": "a", "prefix": "ocr", "prediction": "x", "_line": 1},
           {"image": "a", "prefix": "ocr", "prediction": "y", "_line": 4}]
  with pytest.raises(ValueError, match="line 4.*first on line 1"):
    score("ocr", preds, [{"image": "a", "prefix": "ocr", "suffix": "x"}])


def test_an_answers_list_in_a_reference_row_gives_the_human_answers():
  refs = [{"image": "a", "prefix": "answer en q", "suffix": "yes", "answers": ["yes"] * 2 + ["no"] * 8}]
  metrics, _ = score("vqa", [{"image": "a", "prefix": "answer en q", "prediction": "yes"}], refs)
  assert metrics["accuracy"] == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
