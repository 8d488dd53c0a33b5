"""runcomfy-batch: run large batches of RunComfy Model API jobs from a YAML manifest.

Load a manifest, run it, read the results::

    from runner import BatchOptions, load_manifest, run_batch_sync
    manifest = load_manifest("manifests/demo.yaml")
    result = run_batch_sync(manifest, BatchOptions(token="…"))
    print(result.exit_code, result.report["summary"])
"""

from .batch import BatchOptions, BatchResult, cancel_batch, run_batch, run_batch_sync
from .catalog.models import Catalog
from .errors import RunnerError
from .manifest.loader import Job, Manifest, load_manifest
from .reports.status import Status, status
from .version import __version__

__all__ = [
    "BatchOptions",
    "BatchResult",
    "Catalog",
    "Job",
    "Manifest",
    "RunnerError",
    "Status",
    "__version__",
    "cancel_batch",
    "load_manifest",
    "run_batch",
    "run_batch_sync",
    "status",
]
