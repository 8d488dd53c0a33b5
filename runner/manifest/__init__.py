"""Reading a manifest: file -> checked jobs. Knows nothing of the network or the journal."""

from .loader import Job, Manifest, load_manifest

__all__ = ["Job", "Manifest", "load_manifest"]
