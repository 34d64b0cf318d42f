"""Where model weights come from: built-in models, GGUF conversion, integrity manifests, memory fit, the conversion cache."""
