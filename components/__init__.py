"""paligemma-pipelines: the model library (`components.paligemma`), the five pipeline steps and their shared
helpers (`components.common`). The package's version lives here, and only here (pyproject.toml reads it)."""
__version__ = "0.1.0"
