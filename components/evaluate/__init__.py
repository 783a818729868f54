"""The evaluation step: decode a split with a checkpoint, score it by task, write a report.

Public API (the decoding side lives in `components.evaluate.runner`, imported on demand because it
pulls in jax and the model):
- `score(task, predictions, references)` / `score_files(...)` -> (metrics, per-example records)
- `write_evaluation(out_dir, task, predictions, references, image_root=..., baseline_dir=...)`
- `parse_detections(text)`, `box_confidences(...)`: PaliGemma detection text -> boxes
- `normalize_answer`, `vqa_accuracy`: the official VQA answer normalisation and accuracy
- `render_report(metrics, records, image_root=...)`: the HTML page
"""
from components.evaluate.boxes import Box, Malformed, box_confidences, parse_detections
from components.evaluate.outputs import METRICS, PREDICTIONS, REPORT, write_evaluation
from components.evaluate.report import render_report
from components.evaluate.scoring import TASKS, score, score_files
from components.evaluate.vqa import normalize_answer, vqa_accuracy

__all__ = [
    "Box", "Malformed", "box_confidences", "parse_detections", "METRICS", "PREDICTIONS", "REPORT",
    "write_evaluation", "render_report", "TASKS", "score", "score_files", "normalize_answer", "vqa_accuracy",
]
