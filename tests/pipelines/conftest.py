"""Helpers for the pipeline tests."""
import json
import os

import pytest


def _grow_valid_split(dataset_dir: str, count: int, seed: int = 1) -> list[str]:
  """Today's labelling: `count` more validation images appended to a synthetic Roboflow/COCO export (the
  demo's layout); returns their paths relative to the dataset root."""
  from pipelines import synthetic

  with open(os.path.join(dataset_dir, "valid", "_annotations.coco.json")) as f:
    annotations = json.load(f)
  size = annotations["images"][0]["width"]
  extra_dir = os.path.join(dataset_dir + "-extra")
  new = synthetic.make_detection_dataset(extra_dir, train=0, valid=count, image_size=size, seed=seed)
  with open(os.path.join(new, "valid", "_annotations.coco.json")) as f:
    extra = json.load(f)
  first_id = 1 + max(image["id"] for image in annotations["images"])
  added = []
  for image in extra["images"]:
    name = f"today_{image['id']:05d}.png"
    os.rename(os.path.join(new, "valid", image["file_name"]), os.path.join(dataset_dir, "valid", name))
    annotations["images"].append({**image, "id": first_id + image["id"], "file_name": name})
    annotations["annotations"] += [{**a, "id": len(annotations["annotations"]) + i, "image_id": first_id + image["id"]}
                                   for i, a in enumerate(a for a in extra["annotations"] if a["image_id"] == image["id"])]
    added.append(f"valid/{name}")
  with open(os.path.join(dataset_dir, "valid", "_annotations.coco.json"), "w") as f:
    json.dump(annotations, f)
  return added


@pytest.fixture
def grow_valid_split():
  return _grow_valid_split
