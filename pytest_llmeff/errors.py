"""One error family for the whole plugin.

Every error this package raises on purpose is an ``LlmeffError`` whose message is ONE line that names the value
and what is allowed. Two branches decide how a user meets it:

- ``LlmeffUsageError`` (a ``ValueError``): the user asked for something impossible: a bad option or ini value,
  a storage root or output path that cannot be used, a bad threshold, an interleave directory in the wrong
  state, an unknown country. The plugin turns it into ``pytest.UsageError`` (exit 4) in one place
  (``plugin.pytest_configure``); the ``llmeff`` CLI prints it and exits 2.
- ``LlmeffRunError`` (a ``RuntimeError``): a model or meter fails while a test runs: a model that cannot be
  loaded, a variant this machine cannot run, an energy meter that cannot be read, memory that does not suffice.
  A test meets it as a one-line failure or skip, never as a traceback.

The concrete classes live here so that every layer can raise them without importing the layer that owns the
concept; their old homes (``storage.StorageError``, ``gate.GateConfigError`` ...) re-export them, so old imports
keep working. This module imports nothing.
"""

from __future__ import annotations


class LlmeffError(Exception):
    """Base of every error pytest-llmeff raises on purpose; ``str(exc)`` is one line for the user."""


# --- usage: the request cannot be honoured (pytest exit 4, CLI exit 2) -----------------------------------------
class LlmeffUsageError(LlmeffError, ValueError):
    """A bad option, ini value, path, name or specification; the message names it and what is allowed."""


class InitError(LlmeffUsageError):
    """A value or a destination ``llmeff init`` cannot use (one line); old home ``cli.init``."""


class UsageProblem(LlmeffUsageError):
    """A bad command-line or ini value of a ``--llmeff-*`` option."""


class StorageError(LlmeffUsageError):
    """A run file or baseline that cannot be saved, found or read; the message names the file and the problem."""


class GateConfigError(LlmeffUsageError):
    """A threshold (``--llmeff-compare-fail``, ``thresholds=``) or limit (``limits=``) that cannot be parsed."""


class InterleaveError(LlmeffUsageError, RuntimeError):
    """The lockstep directory cannot be used (another pair's files, an unrelated file, not writable)."""


class UnknownCountry(LlmeffUsageError):
    """A country code with no grid carbon intensity in CodeCarbon's data."""


# --- run: a model or an instrument fails during a test (one-line failure or skip) ------------------------------
class LlmeffRunError(LlmeffError, RuntimeError):
    """Loading or measuring failed for one variant; the other variants go on."""


class ModelSourceError(LlmeffRunError):
    """The model cannot be found, converted or loaded (a failure of that variant's tests)."""


class VariantUnsupported(LlmeffRunError):
    """A valid variant this machine cannot run (fp8 without a capable GPU, bitsandbytes missing ...): a skip."""


class MeterUnavailable(LlmeffRunError):
    """An explicitly requested energy backend cannot be read here."""


class OutOfMemory(LlmeffRunError):
    """A variant does not fit the memory of its device (CUDA out of memory, or weights larger than the free RAM).

    The message gives the batch size, what was needed and what was available, and a hint."""


class LoadOutOfMemory(OutOfMemory, ModelSourceError):
    """Out of memory while loading the weights: the variant's tests fail with the one line (remembered); old home
    ``measure.oom``."""


class VariantTooLarge(VariantUnsupported, OutOfMemory):
    """Estimated before loading: the variant's weights exceed the memory available (a skip with the figures)."""


# --- usage errors of the results floor (appended; their old homes re-export them) ------------------------------
class HistoryError(LlmeffUsageError):
    """``llmeff history`` cannot show a history: nothing stored, an unknown benchmark or metric, or the library
    missing; old home ``results.history``."""


class MergeRefused(LlmeffUsageError):
    """The runs given to ``llmeff merge`` cannot be merged into one (one line saying which files and why); old
    home ``results.merge``."""
