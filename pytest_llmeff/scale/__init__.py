"""More than one process, floor 10: shards, pytest-xdist scheduling, torchrun / accelerate ranks."""
