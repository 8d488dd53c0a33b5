"""``python -m runner.simulator --port 0 --ready-file F [knobs]``: the simulator as its own process."""

from .server import main

main()
