"""The defaults that more than one module needs, each written once.

A leaf (floor 0): it imports nothing from the package, so every floor may read it. A default that only one
module uses stays in that module; this file holds those that the options, the gate, the stop rule, the CLI,
the meters and the ``llmeff init`` templates would otherwise each write down.
"""

from __future__ import annotations

#: the chance of any false "regressed" in a whole run or comparison, split over its tested comparisons
#: (Bonferroni): ``--llmeff-alpha``, ``llmeff compare/report --alpha`` and the gate's functions
DEFAULT_ALPHA = 0.01

#: stop rule: time rounds until every precision metric's 95% interval of the median is within this many percent
#: of the median (``--llmeff-target-ci``, the marker's ``target_ci_pct=``)
DEFAULT_TARGET_CI_PCT = 5.0
#: stop rule: budget of one benchmark's timed rounds, in seconds (``--llmeff-max-time``)
DEFAULT_MAX_TIME_S = 20.0
#: stop rule: the most timed rounds of one benchmark (``--llmeff-max-rounds``)
DEFAULT_MAX_ROUNDS = 100

#: new tokens generated per sequence when the marker does not say (``max_new_tokens=``)
DEFAULT_MAX_NEW_TOKENS = 32

#: grid of the CO2 estimate: ISO 3166 alpha-3 code (``--llmeff-country``)
DEFAULT_COUNTRY_ISO3 = "USA"

#: where Linux exposes RAPL energy counters (``--llmeff-powercap-root`` points elsewhere, e.g. in tests)
DEFAULT_POWERCAP_ROOT = "/sys/class/powercap"

#: everything the plugin writes by default lives under this folder
LLMEFF_DIR = ".llmeff"
#: stored runs (``--llmeff-save``, ``--llmeff-autosave``), one folder per machine fingerprint
DEFAULT_STORAGE = f"{LLMEFF_DIR}/baselines"
#: the per-session results files (never a stored baseline)
DEFAULT_RESULTS_DIR = f"{LLMEFF_DIR}/runs"
