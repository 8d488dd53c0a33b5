"""The runner's version, written once: the package metadata (``pyproject.toml`` reads it through hatch),
``runner.__version__`` and the API client's ``User-Agent``."""

__version__ = "0.1.0"
