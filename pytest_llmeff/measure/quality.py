"""Quality drift against a reference variant, measured outside the timed rounds.

Two probes, each run once per variant (the reference's are cached by ``bench.reference_data``):

**Teacher-forced** (anchored on llama.cpp's ``perplexity --kl-divergence``). The first ``PROBE_MAX_TOKENS`` tokens
of ``data/quality_text.txt`` (an essay written for this project, public domain; 2,611 SmolLM2 tokens) are fed to
the variant and to the reference: the SAME token ids, no generation, so a divergence at one position cannot shift
the positions after it. The ids are cut into non-overlapping windows of ``min(PROBE_WINDOW_MAX_TOKENS, the
model's context)`` tokens, one forward pass each; every position of a window predicts the next token of that
window (so a window of W tokens gives W - 1 positions; the first positions of a window see little context,
identically for both sides). At each position the next-token distribution is ``log_softmax`` in float32, and:

- ``kld_mean_nat`` / ``kld_p99_nat``: the mean and the 99th percentile over positions of KL(reference || variant)
  in nats;
- ``top1_agreement``: the fraction of positions whose most likely token (argmax over the full vocabulary) equals
  the reference's;
- ``ppl``: exp(mean negative log-likelihood of the actual next token), and ``ppl_ratio`` = ppl / reference ppl.

*What is kept of the reference, and the error it costs.* llama.cpp stores the reference's full log-probs (16 bits
per vocabulary entry and position); for SmolLM2 (vocabulary 49,152) and 2,048 positions that is ~200 MB, and
~400 MB in float32. Here the reference keeps, per position, only its ``TOP_K`` most likely token ids with their
log-probs and the log of the remaining mass (``TOP_K`` = 1024: 2,048 x 1,024 x (4 + 4) B = 16 MiB; a variant
compared with it adds 8 MiB for its log-probs on the same ids, while its drift is computed). The variant's
distribution is reduced onto the same K + 1 buckets (its log-probs at the reference's ids, and the log of its
mass elsewhere, computed with logsumexp, not 1 - sum), and the KL is taken between the reduced distributions.
By the data-processing inequality this is a LOWER bound of the exact full-vocabulary KL; the gap at a position is
exactly ``P_rest * KL(P | rest || Q | rest)`` (the reference's mass outside its top K times the divergence of the
two distributions renormalised there), so it vanishes when the reference is confident (little mass outside the
top K) or the two agree on the tail's shape. It is exact when K >= the vocabulary. ``tests/test_quality.py``
checks it against the exact full-vocabulary KL. A variant against itself gives exactly 0. Measured on SmolLM2-135M
(bfloat16 vs float32, 2,046 positions), the gap is about the reference's mean mass outside the buckets: K = 256:
7.3% of that mass, KL 7.3% low; K = 1024: 2.8%, 2.6% low (p99 0.4% low); K = 4096: 0.6%, 0.6% low. The top-1
agreement and the perplexity are exact (full vocabulary on each side).

**Greedy** (the benchmarked work): all prompts of the benchmark (the call's ``prompts=``/``max_new_tokens=`` when
given, else the marker's) in one batch, fixed length, greedy.

- ``token_agreement``: the fraction of positions whose greedy token equals the reference's. Positions after a
  first divergence are compared too (the continuations then differ in their context, so matches there are
  partly chance);
- ``prefix_agreement``: per sequence, the tokens equal to the reference's BEFORE the first divergence, summed and
  divided by all positions; nothing after a divergence counts.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

QUALITY_TEXT = Path(__file__).resolve().parents[1] / "data" / "quality_text.txt"
#: tokens of the quality text the teacher-forced probe reads (the text has more for any English tokenizer)
PROBE_MAX_TOKENS = 2048
#: the longest window of one forward pass (the model's context caps it further); bounds the logits held at once
PROBE_WINDOW_MAX_TOKENS = 1024
#: the reference's most likely tokens kept per position (the rest is one bucket)
TOP_K = 1024
#: positions turned into float32 log-probs at a time (bounds the float32 copy of the logits)
_SLICE_POSITIONS = 256
_CONTEXT_ATTRS = ("max_position_embeddings", "n_positions", "max_sequence_length")


def quality_text() -> str:
    """The probe's text: ``data/quality_text.txt`` without its ``#`` header lines (the public-domain notice)."""
    lines = QUALITY_TEXT.read_text(encoding="utf-8").splitlines()
    return "\n".join(line for line in lines if not line.startswith("#")).strip() + "\n"


def probe_token_ids(tokenizer, max_tokens: int = PROBE_MAX_TOKENS) -> list[int]:
    """The token ids the teacher-forced probe reads: the quality text tokenized once with the tokenizer's defaults
    (special tokens as it adds them), its first ``max_tokens``."""
    ids = tokenizer(quality_text()).input_ids
    return [int(i) for i in ids[:max_tokens]]


def window_tokens(model) -> int:
    """Tokens per forward pass: ``PROBE_WINDOW_MAX_TOKENS``, capped by the context length in the model's config
    (``max_position_embeddings`` or the like, also in a ``text_config``) when it says one."""
    config = getattr(model, "config", None)
    for cfg in (config, getattr(config, "text_config", None)):
        for attr in _CONTEXT_ATTRS:
            value = getattr(cfg, attr, None)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 2:
                return min(PROBE_WINDOW_MAX_TOKENS, value)
    return PROBE_WINDOW_MAX_TOKENS


@dataclass(frozen=True, eq=False)
class TeacherForced:
    """One side of the teacher-forced probe, reduced to the reference's buckets (see the module docstring).

    text_sha256: hash of the token ids read (both sides must have read the same ids).
    window_tokens: tokens per forward pass.
    bucket_ids: (positions, K) int32: the reference's K most likely token ids per position (shared, not copied,
        by the variants compared with it).
    bucket_logprob_nat: (positions, K) float32: this side's log-probabilities (nats) of those ids.
    rest_logprob_nat: (positions,) float32: log of this side's probability mass outside them (-inf when none).
    top1_ids: (positions,) int64: this side's most likely token over the full vocabulary.
    nll_nat: (positions,) float32: -log p(actual next token), nats.
    """

    text_sha256: str
    window_tokens: int
    bucket_ids: Any
    bucket_logprob_nat: Any
    rest_logprob_nat: Any
    top1_ids: Any
    nll_nat: Any

    @property
    def positions(self) -> int:
        """Positions scored (tokens read minus one per window)."""
        return int(self.nll_nat.shape[0])

    @property
    def ppl(self) -> float:
        """Perplexity: exp(mean next-token negative log-likelihood)."""
        return float(math.exp(float(self.nll_nat.double().mean())))


@dataclass(frozen=True, eq=False)
class QualityData:
    """What a variant produced on the quality probe: greedy tokens per prompt (``tokens``) and the
    teacher-forced summary (``forced``)."""

    tokens: tuple[tuple[int, ...], ...]
    forced: TeacherForced

    @property
    def ppl(self) -> float:
        """Perplexity on the quality text (teacher-forced)."""
        return self.forced.ppl


def _reduce(log_probs, bucket_ids):
    """(bucket log-probs, rest log-mass) of float32 ``log_probs`` (n, V) on ``bucket_ids`` (n, K)."""
    at = log_probs.gather(1, bucket_ids)
    rest = log_probs.scatter(1, bucket_ids, float("-inf")).logsumexp(dim=1)
    return at, rest


def teacher_forced(loaded, reference: Optional[TeacherForced] = None, *, top_k: int = TOP_K,
                   max_tokens: int = PROBE_MAX_TOKENS) -> TeacherForced:
    """The teacher-forced probe of ``loaded`` (a LoadedModel: ``.model``, ``.tokenizer``, ``.device``).

    Without ``reference`` this side IS the reference: its own ``top_k`` most likely ids become the buckets. With
    ``reference`` its buckets are used (the same ids must be read: same tokenizer and text, else ValueError).
    One forward pass per window, no generation; the full-vocabulary float32 log-probs of at most
    ``_SLICE_POSITIONS`` positions exist at a time.
    """
    import torch

    ids = probe_token_ids(loaded.tokenizer, max_tokens)
    sha = hashlib.sha256(",".join(map(str, ids)).encode()).hexdigest()
    if reference is not None and reference.text_sha256 != sha:
        raise ValueError("the variant's tokenizer reads the quality text as other token ids than the reference's")
    width = window_tokens(loaded.model) if reference is None else reference.window_tokens
    if len(ids) < 2:
        raise ValueError("the quality text has fewer than 2 tokens")
    parts: dict[str, list] = {"ids": [], "at": [], "rest": [], "top1": [], "nll": []}
    done = 0  # positions scored so far (index into the reference's rows)
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, width):
            window = torch.tensor([ids[start:start + width]], device=loaded.device)
            if window.shape[1] < 2:
                break
            logits = loaded.window_logits(window[0].tolist())[:-1].to(loaded.device)  # engines/base.py
            targets = window[0, 1:]
            for a in range(0, logits.shape[0], _SLICE_POSITIONS):
                log_probs = torch.log_softmax(logits[a:a + _SLICE_POSITIONS].float(), dim=-1)
                n = log_probs.shape[0]
                if reference is None:
                    buckets = log_probs.topk(min(top_k, log_probs.shape[1]), dim=1).indices
                else:
                    buckets = reference.bucket_ids[done:done + n].to(log_probs.device, torch.int64)
                at, rest = _reduce(log_probs, buckets)
                parts["ids"].append(buckets.to("cpu", torch.int32))
                parts["at"].append(at.cpu())
                parts["rest"].append(rest.cpu())
                parts["top1"].append(log_probs.argmax(dim=1).cpu())
                parts["nll"].append(-log_probs.gather(1, targets[a:a + n, None])[:, 0].cpu())
                done += n
            del logits
    bucket_ids = torch.cat(parts["ids"]) if reference is None else reference.bucket_ids
    if reference is not None and done != reference.positions:
        raise ValueError(f"the variant scored {done} positions, the reference {reference.positions}")
    return TeacherForced(text_sha256=sha, window_tokens=width, bucket_ids=bucket_ids,
                         bucket_logprob_nat=torch.cat(parts["at"]), rest_logprob_nat=torch.cat(parts["rest"]),
                         top1_ids=torch.cat(parts["top1"]), nll_nat=torch.cat(parts["nll"]))


def greedy_tokens(loaded, prompts: Sequence[str], max_new_tokens: int) -> tuple[tuple[int, ...], ...]:
    """Greedy fixed-length (EOS suppressed) new token ids for ``prompts``, all in one batch."""
    gen = loaded.generate(list(prompts), max_new_tokens, fixed_length=True)
    return tuple(tuple(int(t) for t in row) for row in gen.new_ids.tolist())


def probe(loaded, prompts: Sequence[str], max_new_tokens: int,
          reference: Optional[TeacherForced] = None) -> QualityData:
    """Both probes of ``loaded``: greedy tokens for ``prompts`` and the teacher-forced summary (on the
    reference's buckets when ``reference`` is given; this side is the reference otherwise)."""
    return QualityData(tokens=greedy_tokens(loaded, prompts, max_new_tokens),
                       forced=teacher_forced(loaded, reference))


def kld_per_position_nat(data: TeacherForced, reference: TeacherForced):
    """KL(reference || data) in nats at each position, on the reference's K + 1 buckets (a lower bound of the
    full-vocabulary KL; see the module docstring). A (positions,) float64 tensor."""
    import torch

    if data.bucket_ids is not reference.bucket_ids and not torch.equal(data.bucket_ids, reference.bucket_ids):
        raise ValueError("the teacher-forced data was not computed on this reference's buckets")
    floor = torch.finfo(torch.float64).min  # -inf rest (K >= vocabulary) becomes a zero-probability bucket
    p = torch.cat([reference.bucket_logprob_nat, reference.rest_logprob_nat[:, None]], dim=1).double().clamp(floor)
    q = torch.cat([data.bucket_logprob_nat, data.rest_logprob_nat[:, None]], dim=1).double().clamp(floor)
    per_bucket = torch.nn.functional.kl_div(q, p, reduction="none", log_target=True)
    return per_bucket.sum(dim=1).clamp_min(0.0)


def agreement(data: QualityData, reference: QualityData) -> float:
    """Fraction of greedy positions whose token equals the reference's (same prompts, same length); positions
    after a first divergence count too."""
    total = same = 0
    for row, ref in zip(data.tokens, reference.tokens, strict=True):
        total += max(len(row), len(ref))
        same += sum(1 for a, b in zip(row, ref) if a == b)
    if total == 0:
        raise ValueError("no generated positions to compare")
    return same / total


def prefix_agreement(data: QualityData, reference: QualityData) -> float:
    """Greedy tokens equal to the reference's before each sequence's first divergence, over all positions."""
    total = same = 0
    for row, ref in zip(data.tokens, reference.tokens, strict=True):
        total += max(len(row), len(ref))
        for a, b in zip(row, ref):
            if a != b:
                break
            same += 1
    if total == 0:
        raise ValueError("no generated positions to compare")
    return same / total


def drift_metrics(data: QualityData, reference: QualityData) -> dict[str, list[float]]:
    """All quality metrics of ``data`` against ``reference``, one sample each: token_agreement,
    prefix_agreement (ratios of greedy positions), top1_agreement (ratio of teacher-forced positions),
    kld_mean_nat, kld_p99_nat (nats), ppl, ppl_ratio."""
    import torch

    kld = kld_per_position_nat(data.forced, reference.forced)
    top1 = float((data.forced.top1_ids == reference.forced.top1_ids).double().mean())
    return {"token_agreement": [agreement(data, reference)],
            "prefix_agreement": [prefix_agreement(data, reference)],
            "top1_agreement": [top1],
            "kld_mean_nat": [float(kld.mean())],
            "kld_p99_nat": [float(torch.quantile(kld, 0.99))],
            "ppl": [data.ppl],
            "ppl_ratio": [data.ppl / reference.ppl]}
