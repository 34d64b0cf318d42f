"""The transformers engine (see ``engine.py`` or ``load.py``)."""
