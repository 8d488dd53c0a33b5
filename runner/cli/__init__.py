"""The command line: ``runcomfy-batch`` (and ``python -m runner``)."""

from .main import main

__all__ = ["main"]
