"""Lockstep decides its pair count from the pairs (paired_stop.py): the candidate decides at checkpoints, the
baseline obeys, and a partner that sends nothing (an older plugin timing the fixed 20) is met with the fixed
count, so the two sides always time the same number of rounds."""

from __future__ import annotations

import random
import threading

import pytest

from pytest_llmeff.lockstep.turnstile import Turnstile
from pytest_llmeff.lockstep.paired_stop import (FIXED, PAIRED_CI, PAIRED_MAX_ROUNDS, PAIRED_MAX_TIME, PairedDecider,
                                       PairedRounds, is_checkpoint, paired_half_width, paired_target)


def test_the_target_is_half_the_smallest_relative_threshold_or_the_stop_rules():
    assert paired_target(0.05, [0.05, 0.10]) == pytest.approx(0.025)
    assert paired_target(0.05, []) == 0.05
    assert paired_target(0.01, [0.10]) == 0.01  # the tighter of the two


def test_checkpoints_are_the_first_count_and_every_ten_pairs_after_it():
    assert [n for n in range(1, 61) if is_checkpoint(n, 20)] == [20, 30, 40, 50, 60]


def _lists(n, spread, seed, shift=0.0):
    rng = random.Random(seed)
    base = [100.0 * (1 + rng.gauss(0, 0.02)) for _ in range(n)]
    cur = [b * (1 + shift) * (1 + rng.gauss(0, spread)) for b in base]
    return {"throughput_tok_s": base}, {"throughput_tok_s": cur}


def test_the_decider_stops_quiet_pairs_at_the_minimum_and_noisy_ones_later():
    decider = PairedDecider(metrics=("throughput_tok_s",), target_rel=0.025, min_pairs=20, max_pairs=100,
                            max_time_s=1e9)
    quiet_b, quiet_c = _lists(20, 0.02, 1)
    assert decider.decide(quiet_b, quiet_c, 19, 1.0) is None  # below the minimum: go on, whatever the spread
    assert decider.decide({k: v[:19] for k, v in quiet_b.items()}, {k: v[:19] for k, v in quiet_c.items()},
                          19, 1.0) is None
    assert decider.decide(quiet_b, quiet_c, 20, 1.0) == PAIRED_CI
    assert decider.achieved["throughput_tok_s"] <= 0.025
    noisy_b, noisy_c = _lists(20, 0.20, 2)
    assert decider.decide(noisy_b, noisy_c, 20, 1.0) is None and decider.achieved["throughput_tok_s"] > 0.025
    noisy_b, noisy_c = _lists(100, 0.20, 2)
    assert decider.decide(noisy_b, noisy_c, 100, 1.0) == PAIRED_MAX_ROUNDS


def test_the_time_budget_and_an_unpaired_metric():
    decider = PairedDecider(metrics=("throughput_tok_s", "ttft_s"), target_rel=0.025, min_pairs=20,
                            max_pairs=100, max_time_s=10.0)
    b, c = _lists(30, 0.20, 3)
    assert decider.decide(b, c, 30, 9.8) == PAIRED_MAX_TIME  # the next checkpoint (10 more pairs) would end past 10 s
    assert decider.decide(b, c, 30, 5.0) is None
    assert "ttft_s" not in decider.achieved  # no figures: not used, neither blocks nor passes the decision


def test_the_half_width_is_about_the_relative_interval_of_the_paired_ratio():
    b, c = _lists(400, 0.05, 4, shift=-0.10)
    hw = paired_half_width(b["throughput_tok_s"], c["throughput_tok_s"])
    assert 0.002 < hw < 0.01  # ~1.96 * 1.25 * 0.05 / sqrt(400) = 0.006
    assert paired_half_width([1.0] * 5, [1.0] * 5) is None
    assert paired_half_width([1.0, -1.0] * 5, [1.0] * 10) is None


def _run_side(pairing: PairedRounds, figures: list[float], out: dict):
    """The runner's loop reduced to the hooks: time 'rounds' until the hook says stop (max 200)."""
    pairing.before_rounds()
    samples: dict[str, list[float]] = {"throughput_tok_s": []}
    reason = None
    while reason is None and len(samples["throughput_tok_s"]) < 200:
        samples["throughput_tok_s"].append(figures[len(samples["throughput_tok_s"])])
        n = len(samples["throughput_tok_s"])
        own = PAIRED_MAX_ROUNDS if n >= 100 else None  # the runner's own rule: only max_rounds is count-based
        reason = pairing.after_round(samples, n, 0.01 * n, own)
    pairing.turnstile.finish()
    out["rounds"], out["reason"] = len(samples["throughput_tok_s"]), reason


def _old_side(turnstile: Turnstile, rounds: int, out: dict):
    """A partner of an older plugin: turns after each round, no messages, a fixed count."""
    for _ in range(rounds):
        turnstile.step()
    turnstile.finish()
    out["rounds"] = rounds


def _pair(tmp_path, baseline_new=True, candidate_new=True, spread=0.2, seed=5):
    directory = tmp_path / "pair"
    sides = {role: Turnstile(directory, role, start_timeout_s=30) for role in ("baseline", "candidate")}
    b, c = _lists(200, spread, seed)
    results: dict = {"baseline": {}, "candidate": {}}
    decider = PairedDecider(metrics=("throughput_tok_s",), target_rel=0.025, min_pairs=20, max_pairs=100,
                            max_time_s=1e9)
    threads = []
    for role, new, figures in (("baseline", baseline_new, b["throughput_tok_s"]),
                               ("candidate", candidate_new, c["throughput_tok_s"])):
        t = sides[role]
        if new:
            pairing = PairedRounds(t, "test_x.py::test_x\0test_x", decider if role == "candidate" else None,
                                   fixed=False, fallback_pairs=20)
            target, args = _run_side, (pairing, figures, results[role])
        else:
            target, args = _old_side, (t, 20, results[role])
        threads.append(threading.Thread(target=lambda t=t, target=target, args=args: (t.start(), target(*args))))
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=60)
        assert not th.is_alive(), "a side hung"
    return results


def test_both_sides_time_the_pairs_the_candidate_decides(tmp_path):
    quiet = _pair(tmp_path / "q", spread=0.01)
    assert quiet["baseline"]["rounds"] == quiet["candidate"]["rounds"] == 20
    assert quiet["baseline"]["reason"] == quiet["candidate"]["reason"] == PAIRED_CI
    noisy = _pair(tmp_path / "n", spread=0.3)
    assert noisy["baseline"]["rounds"] == noisy["candidate"]["rounds"] > 20
    assert noisy["candidate"]["rounds"] in (30, 40, 50, 60, 70, 80, 90, 100)
    assert noisy["baseline"]["reason"] == noisy["candidate"]["reason"]


def test_a_partner_of_an_older_plugin_is_met_with_the_fixed_count(tmp_path):
    old_candidate = _pair(tmp_path / "oc", candidate_new=False, spread=0.3)
    assert old_candidate["baseline"]["rounds"] == old_candidate["candidate"]["rounds"] == 20
    assert old_candidate["baseline"]["reason"] == FIXED
    old_baseline = _pair(tmp_path / "ob", baseline_new=False, spread=0.3)
    assert old_baseline["candidate"]["rounds"] == old_baseline["baseline"]["rounds"] == 20
    assert old_baseline["candidate"]["reason"] == FIXED


def test_a_partner_that_finishes_slowly_still_hands_over_the_last_turn(tmp_path, monkeypatch):
    """The older-partner test without the scheduler's luck: a pause after every file the turnstile writes (what a
    busy machine does at random) must not make the new side see the partner 'done' while the turn is still the
    partner's, and go on alone to 100 rounds instead of stopping at the fixed 20."""
    import time

    from pytest_llmeff.lockstep import turnstile as turnstile_module

    write = turnstile_module._write_atomic

    def slow_write(path, text):
        write(path, text)
        time.sleep(0.05)

    monkeypatch.setattr(turnstile_module, "_write_atomic", slow_write)
    old_candidate = _pair(tmp_path / "oc", candidate_new=False, spread=0.3)
    assert old_candidate["baseline"] == {"rounds": 20, "reason": FIXED}
    old_baseline = _pair(tmp_path / "ob", baseline_new=False, spread=0.3)
    assert old_baseline["candidate"] == {"rounds": 20, "reason": FIXED}
