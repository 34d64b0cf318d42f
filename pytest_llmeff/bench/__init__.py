"""The `llm_benchmark()` call, floor 9: plan and measure (measure.py), the timed rounds (runner.py), the record (record.py)."""
