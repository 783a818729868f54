"""One reader per input format; each turns a local path into a `Source` (rows + classes + issues)."""
from components.convert.readers import coco, hf, mask_png, paligemma_jsonl, tabular, voc, yolo

READERS = {
    "paligemma-jsonl": paligemma_jsonl.read,
    "coco": coco.read,
    "yolo": yolo.read,
    "voc": voc.read,
    "hf": hf.read,
    "csv": tabular.read,
    "mask-png": mask_png.read,
}
FORMATS = tuple(READERS)
