"""One reader per input format; each turns a local path into a `Source` (rows + classes + issues)."""
from components.convert.readers import coco, hf, paligemma_jsonl, tabular, voc, yolo

READERS = {
    "paligemma-jsonl": paligemma_jsonl.read,
    "coco": coco.read,
    "yolo": yolo.read,
    "voc": voc.read,
    "hf": hf.read,
    "csv": tabular.read,
}
FORMATS = tuple(READERS)
