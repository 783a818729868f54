"""The container images the pipeline's steps run in: `components.common.images`, where the steps' own
components find them too (the steps do not import this package)."""
from components.common.images import (EXTRA, FLAVORS, LOCAL_REGISTRY, PACKAGE, PACKAGE_VERSION, STEP_EXTRAS,
                                      default_registry, image_extras, image_uri)

__all__ = ["EXTRA", "FLAVORS", "LOCAL_REGISTRY", "PACKAGE", "PACKAGE_VERSION", "STEP_EXTRAS", "default_registry",
           "image_extras", "image_uri"]
