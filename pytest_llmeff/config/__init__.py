"""What a run asks for, floor 2: options, variants, the engine catalog, precisions, quantization, objectives, shards."""
