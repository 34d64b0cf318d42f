"""The lockstep partner as a baseline: the baseline side hands over its records, the candidate reads them.

The transport of records between the two sides of one ``--llmeff-interleave`` pair (the turnstile's
``baseline/`` folder): ``publish_record`` on the baseline side after each benchmark, ``partner_record`` on the
candidate side when it judges the same benchmark, with whether the two records' rounds pair one to one. And
``lockstep_pair``: whether two stored runs were the two sides of one pair. The judging itself stays in ``gate/``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional

from pytest_llmeff.lockstep.turnstile import rounds_pair

if TYPE_CHECKING:
    from pytest_llmeff.lockstep.turnstile import Turnstile
    from pytest_llmeff.results.schema import BenchmarkRecord, Run


PAIRING_BROKE = ("lockstep pairing broke: rounds were not interleaved with the baseline's throughout (a side "
                 "went on alone, or the round counts differ); only a regression is reported, anything else is "
                 "inconclusive")


def publish_record(turnstile: "Turnstile", record: "BenchmarkRecord") -> None:
    """The baseline side: hand ``record`` (complete, before it is judged) to the candidate."""
    turnstile.publish(record.nodeid, record.name, record.model_dump_json())


def partner_record(turnstile: "Turnstile", record: "BenchmarkRecord") -> tuple[Optional["BenchmarkRecord"], bool]:
    """The candidate side: (the baseline's record of ``record``'s benchmark or None, whether its rounds pair with
    ``record``'s). Why there is none, or why the rounds do not pair, goes into ``record.warnings``."""
    from pytest_llmeff.results.schema import BenchmarkRecord

    text = turnstile.partner_record(record.nodeid, record.name)
    if text is None:
        record.warnings.append(f"the interleave baseline has no record of this benchmark "
                               f"({turnstile.alone_reason or 'not published'}): not compared")
        return None, False
    base = BenchmarkRecord.model_validate_json(text)
    paired = rounds_pair(base, record)
    if not paired:
        record.warnings.append(PAIRING_BROKE)
    return base, paired


def lockstep_pair(base: "Run", current: "Run") -> bool:
    """True when the two runs are the two sides of one ``--llmeff-interleave`` pair."""
    b, c = base.interleave or {}, current.interleave or {}
    return bool(b and c and b.get("dir") == c.get("dir") and b.get("role") != c.get("role"))
