"""The main job is ``pytest benchmarks/``; the full sweep in ``benchmarks/sweep/`` runs only when named:
``pytest benchmarks/sweep --llmeff-report``."""

from pathlib import Path

SWEEP = Path(__file__).resolve().parent / "sweep"


def pytest_ignore_collect(collection_path, config):
    """Skip the sweep folder unless a command-line path points into it."""
    path = Path(collection_path).resolve()
    if path != SWEEP and SWEEP not in path.parents:
        return None
    for arg in config.args:
        target = Path(str(arg).split("::", 1)[0]).resolve()
        if target == SWEEP or SWEEP in target.parents:
            return None
    return True
