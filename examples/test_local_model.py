"""A local model directory of your own: any folder written by `save_pretrained` (config.json, safetensors
weights, tokenizer files), e.g. your fine-tuned checkpoint. Nothing is downloaded; `trust_remote_code` stays off.

Shows: `model=` takes a path; set MY_MODEL_DIR to benchmark yours. Without it, this example first saves a small
random Llama with its own tokenizer into the plugin's cache folder, as a stand-in for a checkpoint of yours.

    MY_MODEL_DIR=path/to/your/checkpoint pytest examples/test_local_model.py --llmeff-report
"""

import os
from pathlib import Path

import pytest


def save_demo_checkpoint(folder: Path) -> Path:
    """Stand-in for your own checkpoint: a 2-layer Llama and a word-piece BPE tokenizer, saved like any model."""
    if (folder / "config.json").is_file():
        return folder
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    text = ["the quick brown fox jumps over the lazy dog", "a model of your own, saved with save_pretrained",
            "every benchmark loads it from this folder once per session"] * 20
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer, bpe.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    bpe.train_from_iterator(text, trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                      show_progress=False))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=48, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    tmp = folder.with_name(folder.name + f".tmp-{os.getpid()}")
    LlamaForCausalLM(config).save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(folder)  # whole or not at all
    except OSError:  # another session saved it first
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _cache() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pytest-llmeff"
    return Path(os.environ.get("LLMEFF_CACHE_DIR", default))


MODEL_DIR = os.environ.get("MY_MODEL_DIR") or str(save_demo_checkpoint(_cache() / "examples" / "my-checkpoint"))


@pytest.mark.llm_efficiency(model=MODEL_DIR, max_new_tokens=8,
                            quality=False, group="my-checkpoint")
def test_my_checkpoint(llm_benchmark):
    result = llm_benchmark()
    assert result.variant.model_source == "directory"
    assert result.metrics["model_bytes"].median > 0
