"""Quality drift (``quality.py``) against independent measurements: the exact full-vocabulary KL computed here
with log_softmax + kl_div, token counts from the tokenizer, greedy tokens generated here."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from pytest_llmeff.measure import quality# noqa: E402

TEXT_FILE = Path(quality.__file__).resolve().parents[1] / "data" / "quality_text.txt"


def _text() -> str:
    """The probe text read here on its own: the file without its '#' header."""
    return "\n".join(l for l in TEXT_FILE.read_text(encoding="utf-8").splitlines() if not l.startswith("#"))


def _exact_log_probs(model, ids: list[int], width: int):
    """Full-vocabulary float32 next-token log-probs, windows of ``width`` tokens (positions, vocab)."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(ids) - 1, width):
            window = torch.tensor([ids[start:start + width]])
            if window.shape[1] < 2:
                break
            rows.append(torch.log_softmax(model(input_ids=window).logits[0, :-1].float(), dim=-1))
    return torch.cat(rows)


def _with(tiny_model, *, scale: float = 1.0, noise: float = 0.0, context: int | None = None):
    """A copy of the tiny model: lm_head x ``scale`` (a confident model: the random tiny one is near uniform),
    MLP weights + N(0, noise) (a fixed seed), ``max_position_embeddings`` = ``context``."""
    model = copy.deepcopy(tiny_model.model)
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
        for name, p in model.named_parameters():
            if "mlp" in name and noise:
                p.add_(torch.randn(p.shape, generator=gen) * noise)
    if context is not None:
        model.config.max_position_embeddings = context
    return dataclasses.replace(tiny_model, model=model)


PROMPTS = ["Explain why a measurement needs a unit.", "Write a line about tides."]


@pytest.fixture(scope="module")
def tiny_reference(tiny_model):
    """The tiny model's own probe (default K = 1024 covers its 877-token vocabulary: every token a bucket)."""
    return quality.probe(tiny_model, PROMPTS, 6)


@pytest.fixture(scope="module")
def tiny_ids(tiny_model):
    """The probe's token ids, tokenized here (not by probe_token_ids), and the tiny model's exact log-probs."""
    ids = tiny_model.tokenizer(_text()).input_ids[:quality.PROBE_MAX_TOKENS]
    return ids, _exact_log_probs(tiny_model.model, ids, 512).double()


@pytest.fixture(scope="module")
def confident_pair(tiny_model):
    """(reference model, perturbed copy, the reference's probe on K = 64 buckets: the default K covers the tiny
    vocabulary of 877 tokens, which would make the reduced KL trivially exact)."""
    ref_model, var_model = _with(tiny_model, scale=30.0), _with(tiny_model, scale=30.0, noise=0.01)
    reference = quality.QualityData(tokens=quality.greedy_tokens(ref_model, PROMPTS, 8),
                                    forced=quality.teacher_forced(ref_model, top_k=64))
    return ref_model, var_model, reference


def test_the_text_is_original_long_enough_and_read_in_full_windows(tiny_model, tiny_reference):
    words = _text().split()
    assert len(words) >= 1500
    ids = tiny_model.tokenizer(_text()).input_ids  # counted here, independently of probe_token_ids
    assert len(ids) >= 2000
    forced = quality.teacher_forced(_with(tiny_model, context=4096))  # a model whose context allows one window
    used = min(quality.PROBE_MAX_TOKENS, len(ids))
    assert used >= 2000 and forced.window_tokens == 1024
    assert forced.positions == used - 2  # 2 windows of 1024 tokens, each scores all but its last token
    small = tiny_reference.forced  # the tiny model's own context (512) caps the window
    assert small.window_tokens == tiny_model.model.config.max_position_embeddings == 512
    assert small.positions == used - 4


def test_a_variant_against_itself_does_not_drift(tiny_model, tiny_reference, tiny_ids):
    reference = tiny_reference
    again = quality.probe(tiny_model, PROMPTS, 6, reference=reference.forced)  # a second, separate pass
    for data in (reference, again):
        m = quality.drift_metrics(data, reference)
        assert set(m) == {"token_agreement", "prefix_agreement", "top1_agreement", "kld_mean_nat", "kld_p99_nat",
                          "ppl", "ppl_ratio"}
        assert all(len(v) == 1 for v in m.values())
        assert m["top1_agreement"] == [1.0] and m["token_agreement"] == [1.0] and m["prefix_agreement"] == [1.0]
        assert abs(m["kld_mean_nat"][0]) <= 1e-6 and abs(m["kld_p99_nat"][0]) <= 1e-6
        assert m["ppl_ratio"][0] == pytest.approx(1.0, abs=1e-6)
    # the perplexity is exp(mean NLL of the actual next tokens), computed here from the full distribution
    ids, lp = tiny_ids
    targets = torch.cat([torch.tensor(ids[s + 1:s + 512]) for s in range(0, len(ids) - 1, 512)])
    nll = -lp.gather(1, targets[:, None]).double().mean()
    assert reference.ppl == pytest.approx(float(torch.exp(nll)), rel=1e-5)


def test_a_perturbed_copy_drifts_and_the_reduced_kl_matches_the_exact_one(tiny_model, confident_pair):
    ref_model, var_model, reference = confident_pair
    mine = quality.probe(var_model, PROMPTS, 8, reference=reference.forced)
    m = quality.drift_metrics(mine, reference)
    assert m["top1_agreement"][0] < 0.95 and m["kld_mean_nat"][0] > 0.01
    assert m["kld_p99_nat"][0] > m["kld_mean_nat"][0]

    # independent: the exact KL(reference || variant) over the full vocabulary at every position
    ids = tiny_model.tokenizer(_text()).input_ids[:quality.PROBE_MAX_TOKENS]
    p = _exact_log_probs(ref_model.model, ids, 512).double()
    q = _exact_log_probs(var_model.model, ids, 512).double()
    exact = torch.nn.functional.kl_div(q, p, reduction="none", log_target=True).sum(dim=1)
    reduced = quality.kld_per_position_nat(mine.forced, reference.forced)
    # stated error: the reduced KL is a lower bound, 2% below the exact mean at most for this confident model
    # (the reference's mass outside its top 64 is ~0.6% here), and the p99 within 2%
    assert 0.001 < float(reference.forced.rest_logprob_nat.exp().mean()) < 0.02  # a real tail, not empty
    assert bool((reduced <= exact + 1e-6).all())
    assert m["kld_mean_nat"][0] == pytest.approx(float(exact.mean()), rel=0.02)
    assert m["kld_p99_nat"][0] == pytest.approx(float(torch.quantile(exact, 0.99)), rel=0.02)
    # and the gap is exactly P_rest * KL(P|rest || Q|rest), from the full distributions
    rest = torch.ones_like(p, dtype=torch.bool).scatter(1, reference.forced.bucket_ids.long(), False)
    p_rest = torch.where(rest, p.exp(), 0.0).sum(1)
    pr = torch.where(rest, p - torch.log(p_rest)[:, None], -torch.inf)
    qr = torch.where(rest, q - torch.where(rest, q, -torch.inf).logsumexp(1)[:, None], -torch.inf)
    tail_kl = torch.where(rest, pr.exp() * (pr - qr), 0.0).sum(1)
    assert torch.allclose(exact - reduced, p_rest * tail_kl, atol=1e-5)
    # top-1 agreement: argmax over the full vocabulary on both sides
    assert m["top1_agreement"][0] == pytest.approx(float((p.argmax(1) == q.argmax(1)).double().mean()))


def test_with_k_covering_the_vocabulary_the_kl_is_exact(tiny_model, tiny_reference, tiny_ids):
    var_model = _with(tiny_model, noise=0.05)
    reference = tiny_reference.forced  # the default K = 1024 > 877 tokens: every token is a bucket
    assert quality.TOP_K >= tiny_model.model.config.vocab_size
    mine = quality.teacher_forced(var_model, reference)
    ids, p = tiny_ids
    q = _exact_log_probs(var_model.model, ids, 512).double()
    exact = torch.nn.functional.kl_div(q, p, reduction="none", log_target=True).sum(dim=1)
    assert torch.allclose(quality.kld_per_position_nat(mine, reference), exact, rtol=1e-4, atol=1e-8)


def test_the_variant_must_read_the_reference_buckets(tiny_reference, confident_pair):
    _, _, reference = confident_pair
    other = tiny_reference.forced  # its own buckets, not the reference's
    with pytest.raises(ValueError, match="buckets"):
        quality.kld_per_position_nat(other, reference.forced)


def test_prefix_agreement_counts_nothing_after_the_first_divergence(confident_pair):
    forced = confident_pair[2].forced
    reference = quality.QualityData(tokens=((1, 2, 3, 4), (5, 6, 7, 8), (9, 9, 9, 9)), forced=forced)
    data = quality.QualityData(tokens=((1, 2, 0, 4), (0, 6, 7, 8), (9, 9, 9, 9)), forced=forced)
    assert quality.prefix_agreement(data, reference) == 6 / 12  # 2 + 0 + 4: the matches after a divergence don't
    assert quality.agreement(data, reference) == 10 / 12  # greedy token agreement counts them (documented)
    m = quality.drift_metrics(data, reference)
    assert m["prefix_agreement"] == [0.5] and m["token_agreement"] == [10 / 12]


CUSTOM = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", precision="bfloat16", max_new_tokens=3, rounds=1, warmup=0)
def test_custom(llm_benchmark):
    llm_benchmark(prompts=[{prompt!r}], max_new_tokens={n})
"""


def test_a_call_with_its_own_prompts_gets_drift_on_those_prompts(llmeff_pytester, run_with_json, tiny_cache):
    from pytest_llmeff.engines.transformers.load import load
    from pytest_llmeff.session.marker import expand

    prompt, n = "The harbour master read the tide gauge every", 11
    llmeff_pytester.makepyfile(test_custom=CUSTOM.format(prompt=prompt, n=n))
    result, data = run_with_json(llmeff_pytester, "--llmeff-energy=off")
    result.assert_outcomes(passed=1)
    (bench,) = data["benchmarks"]
    m = {k: v["median"] for k, v in bench["metrics"].items()}
    # independent: greedy tokens of both precisions generated here, on the call's prompt and length
    rows = []
    for precision in ("float32", "bfloat16"):
        loaded = load(expand({"model": "tiny-random-llama", "precision": precision})[0], tiny_cache)
        rows.append(loaded.generate([prompt], n, fixed_length=True).new_ids[0].tolist())
    assert len(rows[1]) == n
    same = sum(a == b for a, b in zip(*rows))
    prefix = next((i for i, (a, b) in enumerate(zip(*rows)) if a != b), n)
    assert m["token_agreement"] == pytest.approx(same / n)
    assert m["token_agreement"] * n == pytest.approx(round(m["token_agreement"] * n))  # n positions, not the marker's
    assert m["prefix_agreement"] == pytest.approx(prefix / n)
    assert {"top1_agreement", "kld_mean_nat", "kld_p99_nat", "ppl", "ppl_ratio"} <= set(m)
    assert 0.0 <= m["top1_agreement"] <= 1.0 and m["kld_mean_nat"] >= 0.0
