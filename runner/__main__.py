"""``python -m runner`` is ``runcomfy-batch``."""

import sys

from .cli.main import main

sys.exit(main())
