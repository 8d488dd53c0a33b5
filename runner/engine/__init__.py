"""One run of a manifest: the loop, its plan, budget, throttle, pacing, collecting, and the journal."""
