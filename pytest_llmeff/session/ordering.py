"""Test order: each variant's tests together, so a variant loads once per process, and a model's quality
reference before the variants compared with it. Pure: works on (anything, Variant or None) pairs."""

from __future__ import annotations

from typing import Optional, Sequence, TypeVar

from pytest_llmeff.config.variants import Variant

T = TypeVar("T")


def reorder(entries: Sequence[tuple[T, Optional[Variant]]]) -> list[T]:
    """The items of ``entries`` (item, its variant or None) in benchmark order.

    Stable: groups follow the first appearance of each load key; a test without a variant keeps its place;
    a variant's group moves up to its reference's group when the reference appears earlier, and a reference's
    tests come before those of the variants compared with it.
    """
    first_seen: dict[str, int] = {}
    for index, (_, variant) in enumerate(entries):
        if variant is not None:
            first_seen.setdefault(variant.load_key, index)

    def position(indexed: tuple[int, tuple[T, Optional[Variant]]]) -> tuple[int, int, int, int]:
        index, (_, variant) = indexed
        if variant is None:
            return (index, 0, index, index)
        own = first_seen[variant.load_key]
        ref_key = variant.reference().load_key
        anchor = min(own, first_seen.get(ref_key, own))
        return (anchor, 0 if variant.load_key == ref_key else 1, own, index)

    return [item for _, (item, _) in sorted(enumerate(entries), key=position)]
