"""Small helpers more than one step needs: atomic writes of local files and fsspec URLs."""
from components.common.atomic import write_atomic, write_json_atomic
