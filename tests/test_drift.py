"""The stored-baseline gate over session medians (drift.py): false alarms, detection, and an honest MDE,
checked by simulation against the model the test assumes, and the one-session cap."""

from __future__ import annotations

import math
import random
import statistics

import pytest

from pytest_llmeff.gate.drift import (MIN_HISTORY, cap_single, compare_sessions, judge_stored, mde_from_se,
                                 paired_mde, session_spread)
from pytest_llmeff.gate.thresholds import parse_thresholds
from pytest_llmeff.gate.two_sample import compare

TPUT = parse_thresholds("throughput_tok_s:5%")["throughput_tok_s"]
TTFT = parse_thresholds("ttft_s:5%")["ttft_s"]
ZERO = parse_thresholds("throughput_tok_s:0%")["throughput_tok_s"]


def _session(rng, center, sd_between, sd_rounds=0.01, rounds=8):
    """One session's rounds: a session effect (log-normal, sd_between) times round noise."""
    level = center * math.exp(rng.gauss(0.0, sd_between))
    return [level * math.exp(rng.gauss(0.0, sd_rounds)) for _ in range(rounds)]


def test_spread_is_the_sd_of_log_medians():
    s = session_spread([100.0, 110.0, 90.0])
    logs = [math.log(v) for v in (100.0, 110.0, 90.0)]
    assert s.runs == 3 and s.log_scale
    assert s.sd == pytest.approx(statistics.stdev(logs))
    assert s.center == pytest.approx(math.exp(statistics.fmean(logs)))
    assert s.spread_rel == pytest.approx(math.expm1(s.sd))
    assert session_spread([5.0]).spread_rel is None  # one session: no spread


def test_mde_is_the_t_formula():
    from scipy.stats import t

    se, dof, alpha = 0.05, 4, 0.01
    delta = (t.ppf(1 - alpha, dof) + t.ppf(0.9, dof)) * se
    assert mde_from_se(se, dof, alpha, "higher") == pytest.approx(1 - math.exp(-delta))
    assert mde_from_se(se, dof, alpha, "lower") == pytest.approx(math.exp(delta) - 1)


@pytest.mark.parametrize("k", [2, 3, 10])
def test_false_alarms_stay_under_alpha_when_sessions_drift(k):
    """A/A with a 20% session-to-session spread: Mann-Whitney against one session would alarm most of the time;
    the prediction test keeps the rate near alpha (2000 simulated comparisons, bound with binomial slack)."""
    rng = random.Random(7 + k)
    alpha, trials, alarms, mw_alarms = 0.05, 2000, 0, 0
    for _ in range(trials):
        history = [_session(rng, 100.0, 0.2) for _ in range(k)]
        current = _session(rng, 100.0, 0.2)
        v = compare_sessions("throughput_tok_s", [statistics.median(h) for h in history], current, ZERO, alpha)
        alarms += v.status == "regressed"
        mw_alarms += compare("throughput_tok_s", history[0], current, ZERO, alpha).status == "regressed"
    # binomial sd at 5% of 2000 is ~1%: 3 sd of slack; the naive test is shown failing for contrast
    assert alarms / trials <= alpha + 0.03, alarms
    assert mw_alarms / trials > 0.3, mw_alarms


@pytest.mark.parametrize("k", [3, 10])
def test_reported_mde_is_honest(k):
    """Slowdowns at least as large as the MDE each comparison reports are caught >= 90% of the time."""
    rng = random.Random(100 + k)
    alpha, sd, caught, counted = 0.01, 0.05, 0, 0
    for trial in range(1500):
        history = [statistics.median(_session(rng, 100.0, sd)) for _ in range(k)]
        slowdown = rng.choice([0.1, 0.2, 0.3, 0.5, 0.7])
        current = [v * (1 - slowdown) for v in _session(rng, 100.0, sd)]
        v = compare_sessions("throughput_tok_s", history, current, ZERO, alpha)
        if slowdown >= v.mde:
            counted += 1
            caught += v.status == "regressed"
    assert counted >= 200
    assert caught / counted >= 0.90, (caught, counted)


def test_a_clear_drop_against_quiet_history_regresses_and_says_its_mde():
    history = [100.0, 101.0, 99.0, 100.5]
    current = [60.0, 61.0, 59.5, 60.2, 60.8, 59.9]
    v = compare_sessions("throughput_tok_s", history, current, TPUT, 0.01)
    assert v.status == "regressed" and v.history_runs == 4
    # the 5% floor on the spread, not the 0.9% the four sessions show, sets the MDE: ~29%
    assert v.mde is not None and 0.2 < v.mde < 0.4 and v.spread_rel == pytest.approx(0.0087, abs=0.002)
    assert "4 stored sessions" in v.message and "minimum detectable effect" in v.message
    # lower-is-better: ttft doubling is worse
    v = compare_sessions("ttft_s", [0.10, 0.101, 0.099], [0.2] * 6, TTFT, 0.01)
    assert v.status == "regressed" and v.change == pytest.approx(1.0, abs=0.02)


def test_a_threshold_below_the_mde_is_said():
    v = compare_sessions("throughput_tok_s", [100.0, 130.0, 80.0], [99.0] * 6, TPUT, 0.01)
    assert v.status == "ok" and v.mde > 0.5
    assert f"threshold 5% is below what this baseline can resolve (≈ {v.mde * 100:.0f}%)" in v.message


def test_a_few_closely_agreeing_sessions_do_not_make_a_slow_session_a_regression():
    """A machine that is fast most of the time and sometimes 20% slow: three fast stored sessions agree within 1%,
    and the plain t test (2 degrees of freedom) called the slow unchanged session a regression; with the 5% floor on
    the spread it does not, while a tenfold drop still is one."""
    from scipy.stats import t

    history = [445.0, 449.0, 447.0]
    slow_session = [356.0 * (1 + 0.002 * i) for i in range(8)]  # -20%: a slow session of unchanged code
    logs = [math.log(h) for h in history]
    se = statistics.stdev(logs) * math.sqrt(1 + 1 / 3)
    plain_p = t.sf((statistics.fmean(logs) - math.log(statistics.median(slow_session))) / se, 2)
    assert plain_p < 0.0025  # what the unmoderated test would have said at alpha 0.01 / 4
    assert compare_sessions("throughput_tok_s", history, slow_session, TPUT, 0.0025).status != "regressed"
    tenth = [v * 0.1 / 0.8 for v in slow_session]
    assert compare_sessions("throughput_tok_s", history, tenth, TPUT, 0.0025).status == "regressed"


def test_identical_history_falls_back_to_the_sessions_own_interval():
    """K copies of one median have sd 0; the current session's own interval keeps a wobble from being significant."""
    current = [98.0, 99.0, 100.0, 101.0, 102.0, 97.0, 103.0, 99.5]
    v = compare_sessions("throughput_tok_s", [101.0, 101.0, 101.0], current, ZERO, 0.01)
    assert v.status != "regressed"


def test_one_stored_session_cannot_regress():
    base = [100.0, 101.0, 99.0, 100.5, 100.2]
    slow = [30.0, 31.0, 29.5, 30.2, 30.8]
    plain = compare("throughput_tok_s", base, slow, TPUT, 0.01)
    assert plain.status == "regressed"
    capped = cap_single(plain)
    assert capped.status == "inconclusive" and capped.history_runs == 1 and capped.mde is None
    assert "cannot be told from the drift between sessions" in capped.message and "--llmeff-ab" in capped.message
    v = judge_stored("throughput_tok_s", [base], slow, TPUT, 0.01)
    assert v.status == "inconclusive"
    v = judge_stored("throughput_tok_s", [base, [100.0] * 5, [99.0] * 5], slow, TPUT, 0.01)
    assert v.status == "regressed" and v.history_runs == 3
    assert MIN_HISTORY == 2


def test_once_per_variant_figures_are_judged_directly_whatever_the_history():
    thr = parse_thresholds("model_bytes:10%")["model_bytes"]
    v = judge_stored("model_bytes", [[100.0]], [400.0], thr, 0.01)
    assert v.status == "regressed" and v.p_value is None


def test_paired_mde_shrinks_with_pairs():
    rng = random.Random(3)
    base = [100 * math.exp(rng.gauss(0, 0.2)) for _ in range(40)]
    cur = [b * math.exp(rng.gauss(0, 0.03)) for b in base]
    few, many = paired_mde(base[:10], cur[:10], 0.01, "higher"), paired_mde(base, cur, 0.01, "higher")
    assert few is not None and many is not None and many < few < 0.1
    assert paired_mde(base[:2], cur[:2], 0.01, "higher") is None
