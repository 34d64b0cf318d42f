"""Shared setup of the examples.

`custom_metric/` and `machine_info/` are left out of `pytest examples/`: their hooks must be read before the
session starts (pytest reads a conftest.py that early only for the folders given on the command line), so
each runs as its own session: `pytest examples/custom_metric`, `pytest examples/machine_info`. In your project,
put such hooks in the conftest.py at the root of your tests.
"""

collect_ignore = ["custom_metric", "machine_info"]
