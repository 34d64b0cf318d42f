"""Pure statistics, floor 1: median intervals, percentiles, the stop rule."""
