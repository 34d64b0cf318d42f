"""Hooks of the custom-metric example: declare a metric, then give each benchmark its value.

`pytest_llmeff_metric_specs` declares the metric (its unit and which direction is better, so tables, the
gate and the Pareto analysis know how to read it); `pytest_llmeff_custom_metrics` is called after each
benchmark's rounds, outside the timing, with the loaded model and the raw measurement.
"""

from pytest_llmeff.metrics import MetricSpec


def pytest_llmeff_metric_specs(config):
    return [
        MetricSpec("kv_cache_bytes_per_tok", "B", "lower",
                   "KV cache memory one token of context occupies: 2 x layers x KV heads x head dim x dtype bytes",
                   "once"),
        MetricSpec("tok_per_kj", "tok/kJ", "higher", "generated tokens per kilojoule, per timed round"),
    ]


def pytest_llmeff_custom_metrics(config, llm_model, measured):
    cfg = llm_model.model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
    dtype_bytes = next(llm_model.model.parameters()).element_size()
    out = {"kv_cache_bytes_per_tok": [2.0 * cfg.num_hidden_layers * kv_heads * head_dim * dtype_bytes]}
    # one sample per timed round from the round energies the plugin measured (none when energy is off)
    joules = measured.samples.get("energy_j", [])
    out["tok_per_kj"] = [measured.tokens_generated / (j / 1000) for j in joules if j > 0]
    return out
