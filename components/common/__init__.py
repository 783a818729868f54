"""Small helpers more than one step needs: atomic writes of local files and fsspec URLs; what a
`--checkpoint` path names."""
from components.common.atomic import write_atomic, write_json_atomic
from components.common.checkpoints import Checkpoint, resolve_checkpoint
