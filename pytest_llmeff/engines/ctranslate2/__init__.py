"""The ctranslate2 engine (see ``engine.py`` or ``load.py``)."""
