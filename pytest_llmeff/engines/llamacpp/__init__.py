"""The llamacpp engine (see ``engine.py`` or ``load.py``)."""
