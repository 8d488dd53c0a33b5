"""``python -m runner`` is ``runcomfy-batch``."""

import sys

from .cli import main

sys.exit(main())
