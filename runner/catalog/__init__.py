"""The models the runner knows: their input schemas and their prices."""

from .models import Catalog, ModelSpec, schema_dir

__all__ = ["Catalog", "ModelSpec", "schema_dir"]
