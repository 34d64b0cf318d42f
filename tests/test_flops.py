"""FLOPs beyond Llama: the grouped matmuls of mixture-of-experts layers are counted, the analytic count exists only
for architectures it describes, counted vs analytic disagreement is flagged, the peak table matches names exactly.

Every expected FLOP figure here is a hand count written out from the tiny config (2 FLOP per multiply-add), not a
call of the formulas under test. Tiny random models, no network.
"""

from __future__ import annotations

import functools
import types

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pytest_llmeff.measure.flops import (FlopsCounter, KNOWN_MODEL_TYPES, _attention_formulas,  # noqa: E402
                                         analytic_flops, analytic_generate_flops, flops_cache_key,
                                         flops_disagreement_warning,
                                         grouped_mm_flops)
from pytest_llmeff.measure.peaks import PEAK_TFLOPS, normalize_gpu_name, peak_tflops  # noqa: E402

# tiny sizes: hidden h, heads H of size hd, kv heads, MLP width I, experts E with k active, vocab V, layers L
H_SIZE, HEADS, KV_HEADS, INTER, EXPERTS, TOP_K, VOCAB, LAYERS = 32, 4, 2, 48, 4, 2, 96, 2
HEAD_DIM = H_SIZE // HEADS
COMMON = dict(vocab_size=VOCAB, hidden_size=H_SIZE, intermediate_size=INTER, num_hidden_layers=LAYERS,
              num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=64)
BATCH, PROMPT, NEW = 2, 7, 5


def tiny(config_cls, model_cls, **extra):
    torch.manual_seed(0)
    config = config_cls(**{**COMMON, **extra})
    return config, model_cls(config).eval()


def tiny_mixtral(**extra):
    return tiny(transformers.MixtralConfig, transformers.MixtralForCausalLM, num_local_experts=EXPERTS,
                num_experts_per_tok=TOP_K, **extra)


def counted_generate(model, batch=BATCH, prompt=PROMPT, new=NEW):
    """Counted FLOP of a greedy generate of exactly ``new`` tokens (EOS off) from random ``batch`` x ``prompt`` ids."""
    ids = torch.randint(3, VOCAB, (batch, prompt), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode(), FlopsCounter().count() as counted:
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new,
                             min_new_tokens=new, do_sample=False, pad_token_id=0, eos_token_id=None)
    assert out.shape == (batch, prompt + new)
    return counted


def mixtral_hand_count(tokens_per_pass, keys_per_pass, logit_rows_per_pass, batch):
    """Hand count of a tiny Mixtral over passes: each pass runs ``tokens`` query positions per sequence against
    ``keys`` cached+new positions, and the LM head on ``logit_rows`` positions per sequence."""
    total = 0
    for tokens, keys, logit_rows in zip(tokens_per_pass, keys_per_pass, logit_rows_per_pass):
        n = batch * tokens  # rows through every matmul
        q = 2 * n * H_SIZE * (HEADS * HEAD_DIM)
        k = v = 2 * n * H_SIZE * (KV_HEADS * HEAD_DIM)
        o = 2 * n * (HEADS * HEAD_DIM) * H_SIZE
        router = 2 * n * H_SIZE * EXPERTS
        experts = TOP_K * (2 * n * H_SIZE * INTER * 2 + 2 * n * INTER * H_SIZE)  # gate+up, then down
        scores = 2 * batch * HEADS * tokens * keys * HEAD_DIM  # Q K^T
        mix = 2 * batch * HEADS * tokens * keys * HEAD_DIM  # softmax(.) V
        total += LAYERS * (q + k + v + o + router + experts + scores + mix)
        total += 2 * batch * logit_rows * H_SIZE * VOCAB
    return total


# --- grouped_mm (mixture of experts) ----------------------------------------------------------------------------
def test_tiny_mixtral_forward_counts_its_experts():
    config, model = tiny_mixtral()
    ids = torch.randint(3, VOCAB, (BATCH, PROMPT))
    with torch.inference_mode(), FlopsCounter().count() as counted:
        model(input_ids=ids)
    hand = mixtral_hand_count([PROMPT], [PROMPT], [PROMPT], BATCH)
    assert counted.flops == pytest.approx(hand, rel=0.02), counted.by_op
    # the experts run through a grouped matmul; without its formula they counted 0 (the 2.95 vs 7.52)
    grouped = sum(n for op, n in counted.by_op.items() if "grouped_mm" in op)
    assert grouped == LAYERS * TOP_K * 3 * 2 * BATCH * PROMPT * H_SIZE * INTER
    assert counted.flops - grouped < 0.5 * hand


def test_grouped_mm_counts_what_a_per_expert_loop_counts():
    """Independent of our formula: transformers' eager experts loop over plain linears, which torch counts itself."""
    config, model = tiny_mixtral()
    ids = torch.randint(3, VOCAB, (BATCH, PROMPT))
    counts = {}
    for implementation in ("eager", "grouped_mm"):
        model.set_experts_implementation(implementation)
        with torch.inference_mode(), FlopsCounter().count() as counted:
            model(input_ids=ids)
        counts[implementation] = counted.flops
    assert counts["grouped_mm"] == counts["eager"]


@functools.lru_cache(maxsize=None)
def counted_tiny(model_type):
    """(config, counted FLOP of the standard generate) for one tiny architecture, built once per session."""
    config_cls, model_cls, extra = ARCHITECTURES[model_type]
    config, model = tiny(config_cls, model_cls, **extra)
    return config, counted_generate(model).flops


def test_tiny_mixtral_generate_matches_the_hand_count_and_the_analytic_count():
    config, counted = counted_tiny("mixtral")
    # prefill: PROMPT positions, LM head on the last one; then NEW-1 decode steps of one position each
    tokens = [PROMPT] + [1] * (NEW - 1)
    keys = [PROMPT] + [PROMPT + i for i in range(1, NEW)]
    hand = mixtral_hand_count(tokens, keys, [1] * NEW, BATCH)
    assert counted == pytest.approx(hand, rel=0.02)
    flops, reason = analytic_flops(config, BATCH, PROMPT, NEW)
    assert reason is None
    assert flops == pytest.approx(counted, rel=0.02)


def test_transformers_grouped_mm_fallback_is_counted():
    """transformers' own op (used where torch's grouped_mm cannot run) against the hand count of its groups."""
    pytest.importorskip("transformers.integrations.moe")
    op = getattr(getattr(torch.ops, "transformers"), "grouped_mm_fallback", None)
    if op is None:
        pytest.skip("this transformers has no grouped_mm_fallback op")
    rows, k, n = 10, 6, 5
    x, w = torch.randn(rows, k), torch.randn(3, k, n)
    offs = torch.tensor([4, 4, 9], dtype=torch.int32)  # groups of 4, 0 and 5 rows; the 10th row is skipped
    with FlopsCounter().count() as counted:
        op(x, w, offs)
    assert counted.flops == 2 * 9 * k * n


def _grouped_cases():
    """(a, b, offs, the part of the output the groups cover, the per-group matmuls written out, hand FLOP) for the
    four layouts of torch's grouped matmul."""
    g = torch.Generator().manual_seed(2)
    offs = torch.tensor([4, 8, 12], dtype=torch.int32)
    cases = []
    a, b = torch.randn(10, 8, generator=g), torch.randn(3, 8, 4, generator=g)
    jagged = torch.tensor([4, 4, 9], dtype=torch.int32)  # groups of 4, 0 and 5 rows; row 10 is skipped
    cases.append((a, b, jagged, lambda out: out[:9], torch.cat([a[0:4] @ b[0], a[4:9] @ b[2]]), 2 * 9 * 8 * 4))
    a, b = torch.randn(3, 4, 8, generator=g), torch.randn(3, 8, 4, generator=g)
    cases.append((a, b, None, lambda out: out, a @ b, 3 * 2 * 4 * 8 * 4))
    a, b = torch.randn(3, 4, 8, generator=g), torch.randn(8, 16, generator=g)  # b's columns split
    per_group = torch.cat([a[i] @ b[:, 4 * i:4 * i + 4] for i in range(3)], 1)
    cases.append((a, b, offs, lambda out: out[:, :12], per_group, 2 * 4 * 8 * 12))
    a, b = torch.randn(4, 16, generator=g), torch.randn(16, 8, generator=g)  # weight-gradient layout: k split
    per_group = torch.stack([a[:, 4 * i:4 * i + 4] @ b[4 * i:4 * i + 4] for i in range(3)])
    cases.append((a, b, offs, lambda out: out, per_group, 2 * 4 * 12 * 8))
    return cases


@pytest.mark.parametrize("case", range(4))
def test_grouped_mm_layouts_count_their_per_group_matmuls(case):
    a, b, offs, covered, per_group, hand = _grouped_cases()[case]
    with FlopsCounter().count() as counted:
        out = torch._grouped_mm(a, b, offs=offs)
    assert torch.allclose(covered(out), per_group, atol=1e-4)  # the layout really is what the hand count assumes
    assert counted.flops == hand
    assert grouped_mm_flops(a.shape, b.shape, None if offs is None else int(offs[-1])) == hand


def test_grouped_query_attention_is_counted_per_query_head():
    """8 query heads sharing 2 key/value heads: Q K^T and A V cost 2 x b x 8 x queries x keys x head_dim each."""
    q, k, v = torch.randn(2, 8, 5, 16), torch.randn(2, 2, 7, 16), torch.randn(2, 2, 7, 16)
    hand = 2 * (2 * 2 * 8 * 5 * 7 * 16)
    with FlopsCounter().count() as counted:
        torch.nn.functional.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    assert counted.flops == hand
    # the fused CUDA ops get the same formula (torch's own refused these shapes before 2.13)
    fused = _attention_formulas()
    assert len(fused) == 3
    meta = [t.to("meta") for t in (q, k, v)]
    assert all(formula(*meta) == hand for formula in fused.values())


# --- analytic count: only for the architectures it knows -------------------------------------------------------
ARCHITECTURES = {
    "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM, {}),
    "mistral": (transformers.MistralConfig, transformers.MistralForCausalLM, {}),
    "phi3": (transformers.Phi3Config, transformers.Phi3ForCausalLM, {"pad_token_id": 0}),
    "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM, {}),
    "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM, {"head_dim": 16}),
    "mixtral": (transformers.MixtralConfig, transformers.MixtralForCausalLM,
                {"num_local_experts": EXPERTS, "num_experts_per_tok": TOP_K}),
    # a shared expert, one dense layer among the sparse ones
    "qwen2_moe": (transformers.Qwen2MoeConfig, transformers.Qwen2MoeForCausalLM,
                  {"num_experts": EXPERTS, "num_experts_per_tok": TOP_K, "moe_intermediate_size": 24,
                   "shared_expert_intermediate_size": 40, "mlp_only_layers": [1]}),
    "qwen3_moe": (transformers.Qwen3MoeConfig, transformers.Qwen3MoeForCausalLM,
                  {"num_experts": EXPERTS, "num_experts_per_tok": TOP_K, "moe_intermediate_size": 24,
                   "head_dim": 16}),
}


def test_every_known_architecture_is_tested():
    assert set(ARCHITECTURES) == set(KNOWN_MODEL_TYPES)


@pytest.mark.parametrize("model_type", sorted(ARCHITECTURES))
def test_analytic_count_matches_the_counted_generate(model_type):
    config, counted = counted_tiny(model_type)
    assert config.model_type == model_type
    flops, reason = analytic_flops(config, BATCH, PROMPT, NEW)
    assert reason is None
    assert flops == pytest.approx(counted, rel=0.02)


def test_llama_analytic_count_is_the_hand_count():
    config, _ = tiny(transformers.LlamaConfig, transformers.LlamaForCausalLM)
    per_token = LAYERS * (2 * 2 * H_SIZE * HEADS * HEAD_DIM + 2 * 2 * H_SIZE * KV_HEADS * HEAD_DIM
                          + 2 * 3 * H_SIZE * INTER)
    head = 2 * H_SIZE * VOCAB
    attention = sum(LAYERS * 4 * HEADS * HEAD_DIM * q * k
                    for q, k in [(PROMPT, PROMPT)] + [(1, PROMPT + i) for i in range(1, NEW)])
    hand = BATCH * (PROMPT * per_token + head + (NEW - 1) * (per_token + head) + attention)
    assert analytic_flops(config, BATCH, PROMPT, NEW) == (hand, None)
    assert analytic_generate_flops(config, BATCH, PROMPT, NEW) == hand  # the old name still works


def test_gpt_neox_gets_no_analytic_count():
    """GPT-NeoX has every attribute the Llama formula reads, but another block (no gate, 4h MLP, biases)."""
    config, model = tiny(transformers.GPTNeoXConfig, transformers.GPTNeoXForCausalLM, intermediate_size=4 * H_SIZE)
    flops, reason = analytic_flops(config, BATCH, PROMPT, NEW)
    assert flops is None
    assert "gpt_neox" in reason and "llama" in reason
    # the Llama formula would have been wrong for it, and the warning says so
    llama_shaped = analytic_generate_flops(config, BATCH, PROMPT, NEW)
    counted = counted_generate(model).flops
    assert abs(llama_shaped / counted - 1) > 0.10
    assert flops_disagreement_warning(counted, llama_shaped) is not None


def test_unknown_or_incomplete_configs_get_a_reason():
    assert analytic_flops(None, 1, 1, 1)[0] is None
    look_alike = transformers.LlamaConfig(**COMMON)
    look_alike.model_type = "my_llama_fork"  # every Llama attribute, but not a model_type the formula knows
    flops, reason = analytic_flops(look_alike, 1, 4, 2)
    assert flops is None and "my_llama_fork" in reason
    moe = types.SimpleNamespace(model_type="mixtral", num_local_experts=EXPERTS, **COMMON)  # no experts per token
    flops, reason = analytic_flops(moe, 1, 4, 2)
    assert flops is None and "num_experts_per_tok" in reason
    with pytest.raises(ValueError, match="new_tokens=0"):
        analytic_flops(look_alike, 1, 4, 0)


# --- counted vs analytic ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("counted, fires", [(111_000, True), (89_000, True), (109_000, False), (91_000, False),
                                            (100_000, False)])
def test_disagreement_warning_fires_beyond_10_percent(counted, fires):
    warning = flops_disagreement_warning(counted, 100_000)
    assert (warning is not None) is fires
    if fires:
        assert "\n" not in warning and "counted" in warning and "analytic" in warning


def test_disagreement_warning_needs_both_counts():
    assert flops_disagreement_warning(None, 100) is None
    assert flops_disagreement_warning(100, None) is None
    assert flops_disagreement_warning(100, 0) is None


# --- one count for every variant --------------------------------------------------------------------------------
def test_counted_flops_do_not_depend_on_precision():
    """The premise of counting once per model: float32 and bfloat16 copies of a MoE count the same FLOPs."""
    config, model = tiny_mixtral()
    ids = torch.randint(3, VOCAB, (BATCH, PROMPT))
    counts = []
    for dtype in (torch.float32, torch.bfloat16):
        with torch.inference_mode(), FlopsCounter().count() as counted:
            model.to(dtype)(input_ids=ids)
        counts.append(counted.flops)
    assert counts[0] == counts[1] == mixtral_hand_count([PROMPT], [PROMPT], [PROMPT], BATCH)


def test_flops_cache_key():
    key = flops_cache_key("org/model", None, 4, 12, 8)
    assert key == flops_cache_key("org/model", None, 4, 12, 8)
    hash(key)
    others = [flops_cache_key("org/other", None, 4, 12, 8), flops_cache_key("org/model", "abc123", 4, 12, 8),
              flops_cache_key("org/model", None, 2, 12, 8), flops_cache_key("org/model", None, 4, 13, 8),
              flops_cache_key("org/model", None, 4, 12, 9)]
    assert len({key, *others}) == 6
    assert flops_cache_key("org/model", None, torch.tensor(4).item(), 12, 8) == key
    with pytest.raises(ValueError, match="steps"):
        flops_cache_key("org/model", None, 4, 12, 8.0)


# --- peak table ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, card", [
    ("NVIDIA L4", "L4"),
    ("NVIDIA L40S", "L40S"),
    ("nvidia   l40s ", "L40S"),
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA H200 NVL", "H200 NVL"),
    ("NVIDIA A100-SXM4-80GB", "A100-SXM4-80GB"),
    ("NVIDIA A100-SXM4-40GB", "A100-SXM4-40GB"),
    ("NVIDIA A100 80GB PCIe", "A100 80GB PCIe"),
])
def test_listed_cards_get_their_own_peak(name, card):
    assert peak_tflops(name, "bfloat16") == PEAK_TFLOPS[card]["bfloat16"]


@pytest.mark.parametrize("name", ["NVIDIA L40", "NVIDIA L4 Ultra", "Tesla T4", "NVIDIA GeForce RTX 4090",
                                  "NVIDIA A10", "NVIDIA H1000", "NVIDIA RTX A6000", "", None])
def test_unknown_cards_get_no_peak(name):
    assert peak_tflops(name, "bfloat16") is None


def test_name_normalisation():
    assert normalize_gpu_name("NVIDIA L40") == "l40" != normalize_gpu_name("NVIDIA L4")
    assert normalize_gpu_name("NVIDIA H100 80GB HBM3") == normalize_gpu_name("h100  141 GB") == "h100"
    assert normalize_gpu_name("NVIDIA A100-PCIE-40GB") == normalize_gpu_name("nvidia a100 80gb pcie")
    assert peak_tflops("NVIDIA H100 PCIe", "bfloat16") != peak_tflops("NVIDIA H100 NVL", "bfloat16")
    assert peak_tflops("NVIDIA L4", "int4") is None  # a dtype the card's row does not list
