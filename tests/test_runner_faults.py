"""The runner on inputs that do not fit the model: a prompt (plus the new tokens) longer than its context is a
warning in the measurement, in the record and in the terminal table's footer, never silence."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from pytest_llmeff.bench import runner# noqa: E402
from pytest_llmeff.bench.record import Plan, Where, build_record  # noqa: E402
from pytest_llmeff.report.terminal import render  # noqa: E402

CONTEXT = 512  # tiny-random-llama's max_position_embeddings
LONG_PROMPT = "hello " * 2500  # 10,001 tokens with the tiny model's tokenizer


def _expected(prompt_tokens: int, new_tokens: int, source: str = "config.max_position_embeddings") -> str:
    return (f"prompt of {prompt_tokens} tokens (padded) + {new_tokens} new tokens = {prompt_tokens + new_tokens} "
            f"positions exceeds the model's context length of {CONTEXT} ({source}): positions beyond the context "
            "were generated, results may not mean anything")


def _tokens(model, prompt: str) -> int:
    return int(model.encode([prompt])["input_ids"].shape[1])


def _run(model, prompts, max_new_tokens, batch_size=1):
    spec = runner.RunSpec(prompts, batch_size=batch_size, max_new_tokens=max_new_tokens, rounds=1, warmup=0,
                          count_flops=False)
    return runner.run(model, spec, None)


def test_a_10k_token_prompt_on_a_512_token_model_is_a_warning_with_the_numbers(tiny_model):
    assert tiny_model.model.config.max_position_embeddings == CONTEXT
    prompt_tokens = _tokens(tiny_model, LONG_PROMPT)
    assert prompt_tokens > 10_000
    measured = _run(tiny_model, [LONG_PROMPT], max_new_tokens=3)
    assert measured.samples["latency_s"]  # measured all the same: a warning, not an error
    assert [w for w in measured.warnings if "context" in w] == [_expected(prompt_tokens, 3)]


def test_the_padded_prompt_plus_the_new_tokens_is_what_must_fit(tiny_model):
    short, long_ = "hello there", "hello " * 100
    padded = _tokens(tiny_model, long_)  # the batch is left-padded to its longest prompt
    assert padded < CONTEXT - 2
    fits = _run(tiny_model, [short, long_], max_new_tokens=CONTEXT - padded, batch_size=2)
    assert not any("context" in w for w in fits.warnings), fits.warnings
    over = _run(tiny_model, [short, long_], max_new_tokens=CONTEXT - padded + 1, batch_size=2)
    assert [w for w in over.warnings if "context" in w] == [_expected(padded, CONTEXT - padded + 1)]


def test_the_context_length_comes_from_the_config_else_a_sane_tokenizer_limit():
    def loaded(config, model_max_length):
        return SimpleNamespace(model=SimpleNamespace(config=config),
                               tokenizer=SimpleNamespace(model_max_length=model_max_length))

    assert runner.context_length(loaded(SimpleNamespace(max_position_embeddings=4096), 2048)) == (
        4096, "config.max_position_embeddings")
    assert runner.context_length(loaded(SimpleNamespace(n_positions=1024), None)) == (1024, "config.n_positions")
    assert runner.context_length(loaded(SimpleNamespace(text_config=SimpleNamespace(max_position_embeddings=8192)),
                                        None)) == (8192, "config.max_position_embeddings")
    assert runner.context_length(loaded(SimpleNamespace(), 2048)) == (2048, "tokenizer.model_max_length")
    assert runner.context_length(loaded(SimpleNamespace(), int(1e30))) is None  # transformers' "unknown"
    assert runner.context_length(loaded(SimpleNamespace(max_position_embeddings=None), None)) is None
    assert runner.context_warning(2000, 100, (2048, "tokenizer.model_max_length")) == (
        "prompt of 2000 tokens (padded) + 100 new tokens = 2100 positions exceeds the model's context length of "
        "2048 (tokenizer.model_max_length): positions beyond the context were generated, results may not mean "
        "anything")
    assert runner.context_warning(2000, 48, (2048, "x")) is None
    assert runner.context_warning(10**6, 1, None) is None  # unknown context: nothing to say


def test_the_warning_is_in_the_record_and_under_the_terminal_table(tiny_model):
    prompt_tokens = _tokens(tiny_model, LONG_PROMPT)
    measured = _run(tiny_model, [LONG_PROMPT], max_new_tokens=2)
    variant = tiny_model.variant
    record = build_record(Where(nodeid="t.py::test_long", name="test_long", params={}), variant,
                          Plan(prompts=(LONG_PROMPT,), max_new_tokens=2, rounds=1, warmup=0), tiny_model, measured,
                          {})
    assert _expected(prompt_tokens, 2) in record.warnings
    text = render([record])
    lines = text.splitlines()
    footer = f"warning: {variant.id}: {_expected(prompt_tokens, 2)}"
    assert footer in lines
    table_end = max(i for i, line in enumerate(lines) if line.startswith("test_long"))
    assert lines.index(footer) > table_end  # under the table


def test_the_footer_lists_each_records_warnings_prefixed_with_its_variant_id(tiny_model):
    from pytest_llmeff.report.terminal import warning_lines

    measured = _run(tiny_model, ["hello there"], max_new_tokens=2)

    def record(precision_id: str, warnings: list[str]):
        rec = build_record(Where(nodeid=f"t.py::test[{precision_id}]", name=f"test[{precision_id}]", params={}),
                           tiny_model.variant, Plan(prompts=("hello there",), max_new_tokens=2, rounds=1, warmup=0),
                           tiny_model, measured, {})
        return rec.model_copy(update={"warnings": warnings,
                                      "variant": rec.variant.model_copy(update={"id": precision_id})})

    records = [record("a-b1", ["first", "second"]), record("b-b1", ["first"]), record("c-b1", [])]
    assert warning_lines(records) == ["warning: a-b1, b-b1: first", "warning: a-b1: second"]
    assert warning_lines(records[:2] + [record("c-b1", ["first"])]) == ["warning: all 3 variants: first",
                                                                          "warning: a-b1: second"]
    lines = render(records).splitlines()
    assert [line for line in lines if line.startswith("warning:")] == warning_lines(records)


@pytest.mark.slow
def test_a_too_long_prompt_passes_with_the_warning_in_the_json_and_the_table(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_long=f"""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=2, rounds=1, warmup=0, quality=False)
        def test_long(llm_benchmark):
            llm_benchmark(prompts=[{LONG_PROMPT!r}])
    """)
    result, data = run_with_json(llmeff_pytester, "--llmeff-energy=off", "--llmeff-report")
    result.assert_outcomes(passed=1)
    bench = data["benchmarks"][0]
    message = _expected(bench["prompt_tokens"], 2)
    assert message in bench["warnings"]
    result.stdout.fnmatch_lines([f"warning: {bench['variant']['id']}: {message}"])


def test_lockstep_callbacks_pass_the_turn_after_the_warm_up_and_after_each_round_never_inside_a_timing(tiny_model):
    """Lockstep passes the turn after the warm-up (``before_rounds``) and after each timed round, so every timed
    round, the first included, starts right after the partner's work; no callback runs inside a timed call."""
    calls: list[str] = []
    original = tiny_model.generate_ids

    def logged(*args, **kwargs):
        calls.append("generate")
        return original(*args, **kwargs)

    tiny_model.generate_ids = logged
    try:
        spec = runner.RunSpec(("hello world",), batch_size=1, max_new_tokens=2, rounds=3, warmup=2, count_flops=False)
        hooks = runner.RoundHooks(before_rounds=lambda: calls.append("turn"),
                                  after_round=lambda samples, n, elapsed, reason: calls.append("turn") or reason)
        runner.run(tiny_model, spec, None, hooks=hooks)
    finally:
        tiny_model.generate_ids = original
    # the warm-up, the turn, three timed rounds each followed by the turn; an untimed generate may follow (the
    # memory delta's own window), after the last turn came back
    assert calls[:9] == ["generate", "generate", "turn", "generate", "turn", "generate", "turn", "generate", "turn"]
    assert "turn" not in calls[9:]
