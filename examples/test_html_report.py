"""The HTML report and the Pareto front: which variant to pick when speed, memory and quality drift pull apart.

Shows: `--llmeff-html=PATH` writes one self-contained file (no network needed to open it): provenance, the
sortable table with intervals, Pareto plots (throughput vs quality drift, vs peak memory, energy per token vs
throughput) with dominated variants dimmed, and the per-round distributions. `--llmeff-pareto` picks the
objectives; `llmeff summary` prints the rankings and the front in the terminal, `llmeff report` rebuilds the
HTML from a stored run (with `--baseline` for deltas). Needs the `report` extra (Plotly).

    pytest examples/test_html_report.py --llmeff-html=report.html --llmeff-pareto=throughput_tok_s,ppl_ratio --llmeff-json=run.json
    llmeff summary run.json
    llmeff report run.json -o report.html
"""

import pytest


@pytest.mark.llm_efficiency(
    model="tiny-random-llama",
    precision=["float32", "bfloat16"],
    quantization=[None, "dynamic-int8"],  # dynamic-int8 runs in float32 only: the bfloat16 one is skipped
    max_new_tokens=8,
    group="pareto",
)
def test_variants_for_the_front(llm_benchmark):
    result = llm_benchmark()
    assert "ppl_ratio" in result.metrics and "throughput_tok_s" in result.metrics
