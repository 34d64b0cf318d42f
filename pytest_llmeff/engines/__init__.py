"""Load and generate, floor 5: the LoadedEngine interface (base.py), one folder per engine, model sources and caches."""
