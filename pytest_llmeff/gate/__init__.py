"""Verdicts, floor 7: thresholds, two-sample tests, the false-alarm budget, the stored-session gate, baselines."""
