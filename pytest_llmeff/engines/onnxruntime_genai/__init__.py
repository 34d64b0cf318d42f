"""The onnxruntime_genai engine (see ``engine.py`` or ``load.py``)."""
