"""The plugin as users meet it: real pytest sessions (pytester) on the tiny model, then the files and output."""

from __future__ import annotations

import json

import pytest

jsonschema = pytest.importorskip("jsonschema")

from pytest_llmeff.results.runfile import SCHEMA_FILE  # noqa: E402

TWO_BY_TWO = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float32", "bfloat16"], batch_size=[1, 2],
                            max_new_tokens=6, group="demo")
def test_speed(llm_benchmark):
    result = llm_benchmark()
    assert result.metrics["throughput_tok_s"].median > 0
    assert result.tokens_generated == result.variant.batch_size * 6
"""


def _validate(data):
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema.validate(data, schema)


def test_one_test_per_variant_with_readable_ids_json_and_table(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_demo=TWO_BY_TWO)
    result, data = run_with_json(llmeff_pytester, "-v", "--llmeff-rounds=2", "--llmeff-warmup=0")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines([
        "*test_speed?tiny-random-llama-fp32-b1? PASSED*",
        "*test_speed?tiny-random-llama-fp32-b2? PASSED*",
        "*test_speed?tiny-random-llama-bf16-b1? PASSED*",
        "*test_speed?tiny-random-llama-bf16-b2? PASSED*",
    ])
    # the comparison table, grouped, with variant columns, medians (2 rounds: "?", no interval, never marked
    # best) and estimated energy
    result.stdout.fnmatch_lines([
        "*= llmeff =*",
        "model: tiny-random-llama   group: demo",
        "test*precision*quant*batch*tok/s*TTFT ms*J/tok*",
        "*float32*1* [?] *",
        "median ±X%: 95% interval of the median*",
        "llmeff: results written to *out.json",
    ])
    # no cell without an interval is ever marked best or tied (ITL, pooled per token, may have one and be marked)
    out = result.stdout.str()
    assert "~" in out and "? *" not in out and "? =" not in out
    # -v prints one line per benchmark under its test
    result.stdout.fnmatch_lines(["llmeff: tiny-random-llama-bf16-b2: * tok/s, ttft * ms, tpot * ms, peak * MiB*"])

    _validate(data)
    assert data["schema"] == "pytest-llmeff/1.1"
    assert {b["variant"]["id"] for b in data["benchmarks"]} == {
        "tiny-random-llama-fp32-b1", "tiny-random-llama-fp32-b2", "tiny-random-llama-bf16-b1",
        "tiny-random-llama-bf16-b2"}
    required = {"throughput_tok_s", "prefill_tok_s", "ttft_s", "tpot_s", "latency_s", "peak_mem_bytes",
                "model_bytes", "energy_j", "energy_j_per_tok", "co2_g", "flops_per_tok", "tflops", "load_s"}
    for bench in data["benchmarks"]:
        assert required <= set(bench["metrics"]), required - set(bench["metrics"])
        assert bench["outcome"] == "passed" and bench["group"] == "demo"
        assert bench["rounds"] == 2 and bench["warmup"] == 0
        assert len(bench["metrics"]["latency_s"]["samples"]) == 2
        assert bench["energy"]["estimated"] is True and bench["energy"]["method"].startswith("codecarbon")
        assert bench["metrics"]["ttft_s"]["unit"] == "s" and bench["metrics"]["ttft_s"]["direction"] == "lower"
    for key in ("cpu", "cores_logical", "ram_bytes", "gpus", "os", "python"):
        assert key in data["machine"]
    for lib in ("python", "torch", "transformers", "accelerate", "bitsandbytes", "codecarbon"):
        assert lib in data["versions"]
    assert data["versions"]["torch"] is not None
    assert "dirty" in data["commit"] and data["started_at"] <= data["finished_at"]
    # bf16 weights are half of fp32 (the float32 rotary buffer, 8 values, stays float32)
    by_id = {b["variant"]["id"]: b for b in data["benchmarks"]}
    fp32 = by_id["tiny-random-llama-fp32-b1"]["metrics"]["model_bytes"]["median"]
    bf16 = by_id["tiny-random-llama-bf16-b1"]["metrics"]["model_bytes"]["median"]
    assert fp32 / 2 < bf16 <= fp32 / 2 + 64


def test_each_variant_loads_once_when_tests_share_it(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_share="""
        import pytest
        MARK = pytest.mark.llm_efficiency(model="tiny-random-llama", precision=["float32", "bfloat16"],
                                          max_new_tokens=4, rounds=1, warmup=0)

        @MARK
        def test_one(llm_model):
            assert llm_model.generate(["hello"], 3).steps >= 1

        @MARK
        def test_two(llm_benchmark):
            llm_benchmark()

        @MARK
        def test_three(llm_model):
            assert llm_model.model is not None
    """)
    result, data = run_with_json(llmeff_pytester, "-v")
    result.assert_outcomes(passed=6)
    keys = [load["key"] for load in data["loads"]]
    assert len(keys) == 2 and len(set(keys)) == 2, keys
    assert result.stdout.str().count("llmeff: loaded tiny-random-llama") == 2
    # grouped: all float32 tests ran before any bfloat16 test
    order = [line for line in result.stdout.lines if " PASSED" in line]
    assert all("fp32" in line for line in order[:3]) and all("bf16" in line for line in order[3:])

    # without reordering the variants alternate and must be reloaded: the grouping is what saves the loads
    result, data = run_with_json(llmeff_pytester, "--llmeff-no-reorder")
    result.assert_outcomes(passed=6)
    assert len(data["loads"]) == 6


def test_ini_options_apply_and_the_cli_overrides_them(llmeff_pytester):
    llmeff_pytester.makeini("""
        [pytest]
        llmeff_report = true
        llmeff_rounds = 3
        llmeff_warmup = 0
        llmeff_json = from-ini.json
    """)
    llmeff_pytester.makepyfile(test_ini="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=3)
        def test_x(llm_benchmark):
            llm_benchmark()
    """)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    data = json.loads((llmeff_pytester.path / "from-ini.json").read_text())
    assert data["benchmarks"][0]["rounds"] == 3
    result.stdout.fnmatch_lines(["*= llmeff =*"])

    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-rounds=2")
    result.assert_outcomes(passed=1)
    data = json.loads((llmeff_pytester.path / "from-ini.json").read_text())
    assert data["benchmarks"][0]["rounds"] == 2


def test_marker_rounds_apply_without_options(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_m="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=3, rounds=4, warmup=0)
        def test_x(llm_benchmark):
            llm_benchmark()
    """)
    result, data = run_with_json(llmeff_pytester)
    result.assert_outcomes(passed=1)
    assert data["benchmarks"][0]["rounds"] == 4


BAD_AND_GOOD = """
import pytest

@pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=3, rounds=1, warmup=0)
def test_good(llm_benchmark):
    llm_benchmark()

@pytest.mark.llm_efficiency({kwargs})
def test_bad(llm_benchmark):
    llm_benchmark()
"""


@pytest.mark.parametrize("kwargs, message", [
    ('model="tiny-random-llama", colour="red"', "unknown argument 'colour'; allowed: model, precision,"),
    ('model="tiny-random-llama", precision="float64"',
     "precision='float64' is not allowed; allowed: float32, float16, bfloat16"),
    ('model="tiny-random-llama", batch_size=0', "batch_size=0 is not allowed; batch sizes are integers >= 1"),
    ('model="tiny-random-llama", batch_size=-3', "batch_size=-3 is not allowed"),
    ('model="tiny-random-llama", prompts=[]', "prompts=[] is empty"),
    ('model="./models/nowhere"', "model='./models/nowhere': no such directory"),
    ('model="nobody/not-cached-model"', "model 'nobody/not-cached-model' is not in the local Hugging Face cache"),
    ('model="tiny-random-llama", rounds="many"', "rounds='many' is not allowed; it must be an integer"),
])
def test_bad_marker_input_errors_that_test_only(llmeff_pytester, run_with_json, kwargs, message):
    llmeff_pytester.makepyfile(test_bad=BAD_AND_GOOD.replace("{kwargs}", kwargs))
    result, data = run_with_json(llmeff_pytester, "--llmeff-report")
    out = result.stdout.str()
    assert "INTERNALERROR" not in out and "Traceback" not in out
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines([f"*test_bad.py::test_bad*{message}*"])
    # the good test's results are still written
    assert data is not None and [b["name"] for b in data["benchmarks"]] == ["test_good[tiny-random-llama-fp32-b1]"]
    assert result.ret == 1


@pytest.mark.parametrize("args, ini, message", [
    (["--llmeff-rounds=abc"], "", "--llmeff-rounds='abc' is not an integer; give an integer >= 1"),
    (["--llmeff-rounds=0"], "", "--llmeff-rounds=0 is not allowed; give an integer >= 1"),
    (["--llmeff-warmup=-1"], "", "--llmeff-warmup=-1 is not allowed; give an integer >= 0"),
    ([], "llmeff_rounds = 2.5", "llmeff_rounds (ini)='2.5' is not an integer"),
    (["--llmeff-skip", "--llmeff-only"], "", "--llmeff-skip and --llmeff-only exclude each other"),
    (["--llmeff-country=France"], "", "country 'France' is not an ISO 3166 alpha-3 code"),
])
def test_bad_options_are_usage_errors(llmeff_pytester, args, ini, message):
    if ini:
        llmeff_pytester.makeini(f"[pytest]\n{ini}\n")
    llmeff_pytester.makepyfile(test_x="def test_x():\n    pass\n")
    result = llmeff_pytester.runpytest_subprocess(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*pytest-llmeff: {message}*"])
    assert "INTERNALERROR" not in result.stderr.str() + result.stdout.str()


def test_skip_and_only(llmeff_pytester):
    llmeff_pytester.makepyfile(test_mix="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=2, rounds=1, warmup=0)
        def test_bench(llm_benchmark):
            llm_benchmark()

        def test_unit():
            pass
    """)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-skip", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*benchmarks skipped by --llmeff-skip*"])
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-only")
    result.assert_outcomes(passed=1, deselected=1)


def test_stacks_with_parametrize_and_records_the_params(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_stack="""
        import pytest
        @pytest.mark.parametrize("length", [2, 5])
        @pytest.mark.llm_efficiency(model="tiny-random-llama", batch_size=[1, 2], rounds=1, warmup=0)
        def test_len(llm_benchmark, length):
            r = llm_benchmark(max_new_tokens=length)
            assert r.tokens_generated == r.variant.batch_size * length
    """)
    result, data = run_with_json(llmeff_pytester)
    result.assert_outcomes(passed=4)
    params = sorted((b["params"]["length"], b["variant"]["batch_size"], b["variant"]["max_new_tokens"])
                    for b in data["benchmarks"])
    assert params == [("2", 1, 2), ("2", 2, 2), ("5", 1, 5), ("5", 2, 5)]


def test_custom_prompts_and_failed_test_outcome_is_recorded(llmeff_pytester, run_with_json):
    llmeff_pytester.makepyfile(test_p="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", prompts=["one", "two words", "three more words"],
                                    batch_size=3, max_new_tokens=2, rounds=1, warmup=0)
        def test_fails_after_measuring(llm_benchmark):
            r = llm_benchmark()
            assert r.metrics["throughput_tok_s"].median > 1e12, "deliberately impossible"
    """)
    result, data = run_with_json(llmeff_pytester)
    result.assert_outcomes(failed=1)
    bench = data["benchmarks"][0]
    assert bench["outcome"] == "failed"
    assert bench["variant"]["prompts"] == 3 and bench["tokens_generated"] == 6
    assert bench["prompt_tokens"] > 3


def test_works_beside_pytest_benchmark_in_one_test(llmeff_pytester, run_with_json):
    pytest.importorskip("pytest_benchmark")
    llmeff_pytester.makepyfile(test_both="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=2, rounds=1, warmup=0)
        def test_both(llm_benchmark, benchmark, llm_model):
            llm_benchmark()
            benchmark(lambda: llm_model.tokenizer("hello world"))
    """)
    result, data = run_with_json(llmeff_pytester, "--benchmark-disable-gc")
    result.assert_outcomes(passed=1)
    assert len(data["benchmarks"]) == 1
    result.stdout.fnmatch_lines(["*benchmark: 1 tests*", "*= llmeff =*"])


def test_unwritable_json_path_is_reported_not_an_internal_error(llmeff_pytester):
    llmeff_pytester.makepyfile(test_w="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=2, rounds=1, warmup=0)
        def test_x(llm_benchmark):
            llm_benchmark()
    """)
    blocker = llmeff_pytester.path / "blocker"
    blocker.write_text("a file, not a directory")
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--llmeff-json={blocker}/run.json")
    assert "INTERNALERROR" not in result.stdout.str()
    # found before any benchmark runs (a usage error), not after the whole run
    result.stderr.fnmatch_lines(["ERROR: pytest-llmeff: --llmeff-json=*/blocker/run.json cannot be written: "
                                 "*/blocker is a file, not a folder"])
    assert result.ret == 4


def test_default_json_path_and_atomic_write(llmeff_pytester):
    llmeff_pytester.makepyfile(test_d="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=2, rounds=1, warmup=0)
        def test_x(llm_benchmark):
            llm_benchmark()
    """)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider", "--llmeff-report")
    result.assert_outcomes(passed=1)
    files = list((llmeff_pytester.path / ".llmeff" / "runs").iterdir())
    assert len(files) == 1 and files[0].name.endswith("_tiny-random-llama.json")
    assert not [f for f in files if f.name.startswith(".")]  # no temp file left behind
    _validate(json.loads(files[0].read_text()))


def test_hooks_extend_machine_info_and_add_custom_metrics(llmeff_pytester, run_with_json):
    llmeff_pytester.makeconftest("""
        from pytest_llmeff.metrics import MetricSpec

        def pytest_llmeff_update_machine_info(config, machine_info):
            machine_info["rack"] = "B7"

        def pytest_llmeff_metric_specs(config):
            return [MetricSpec("vocab_tokens", "tok", "none", "tokenizer vocabulary size")]

        def pytest_llmeff_custom_metrics(config, llm_model, measured):
            return {"vocab_tokens": [float(len(llm_model.tokenizer))]}
    """)
    llmeff_pytester.makepyfile(test_h="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama", max_new_tokens=2, rounds=1, warmup=0)
        def test_x(llm_benchmark, llm_model):
            r = llm_benchmark()
            assert r.metrics["vocab_tokens"].samples == [float(len(llm_model.tokenizer))]
    """)
    result, data = run_with_json(llmeff_pytester)
    result.assert_outcomes(passed=1)
    assert data["machine"]["rack"] == "B7"
    metric = data["benchmarks"][0]["metrics"]["vocab_tokens"]
    assert metric["unit"] == "tok" and metric["median"] > 100
    from pytest_llmeff.metrics import METRICS

    assert "vocab_tokens" not in METRICS  # user metrics belong to their session only


def test_energy_and_flops_fixtures_in_a_user_test(llmeff_pytester):
    llmeff_pytester.makepyfile(test_f="""
        import pytest
        @pytest.mark.llm_efficiency(model="tiny-random-llama")
        def test_meters(llm_model, energy_tracker, flops_counter):
            with energy_tracker.measure() as e, flops_counter.count() as f:
                llm_model.generate(["hello there", "a"], 4)
            assert e.estimated is True and e.energy_j > 0 and e.co2_g > 0 and e.method.startswith("codecarbon")
            assert f.flops > 0
    """)
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_fixtures_without_the_marker_say_what_is_missing(llmeff_pytester):
    llmeff_pytester.makepyfile(test_nomark="def test_x(llm_model):\n    pass\n")
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*test_nomark.py::test_x uses the llmeff fixtures without "
                                 "@pytest.mark.llm_efficiency(model=...)*"])


def test_no_benchmarks_no_report_noise(llmeff_pytester):
    llmeff_pytester.makepyfile(test_plain="def test_x():\n    pass\n")
    result = llmeff_pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    after_collection = result.stdout.str().split("collected 1 item", 1)[1]
    assert "llmeff" not in after_collection


@pytest.mark.slow
def test_xdist_workers_send_their_records_to_the_controller(llmeff_pytester, run_with_json):
    pytest.importorskip("xdist")
    llmeff_pytester.makepyfile(test_demo=TWO_BY_TWO)
    out = llmeff_pytester.path / "x.json"
    result = llmeff_pytester.runpytest_subprocess("-n", "2", "--dist", "loadgroup", f"--llmeff-json={out}",
                                                  "--llmeff-rounds=1", "--llmeff-warmup=0")
    result.assert_outcomes(passed=4)
    data = json.loads(out.read_text())
    _validate(data)
    assert len(data["benchmarks"]) == 4
    # each worker loads each variant it runs at most once (xdist_group marks are added for --dist loadgroup,
    # which pytest-xdist 3.8 does not honour on pytest 9.2, so a variant may load once on each worker)
    pairs = [(load["worker"], load["key"]) for load in data["loads"]]
    assert len(pairs) == len(set(pairs)) and 2 <= len(pairs) <= 4
    assert {w for w, _ in pairs} <= {"gw0", "gw1"}
