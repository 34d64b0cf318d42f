"""Grid carbon intensity by country, from CodeCarbon's bundled energy-mix data (offline).

co2_g = energy_j / 3.6e6 (kWh) x intensity (g CO2-eq per kWh) of the chosen country.
"""

from __future__ import annotations

from pytest_llmeff.errors import UnknownCountry  # noqa: F401  (its old home; defined in errors.py)

import difflib
from functools import lru_cache

J_PER_KWH = 3.6e6




@lru_cache(maxsize=1)
def _energy_mix() -> dict:
    from codecarbon.input import DataSource

    return DataSource().get_global_energy_mix_data()


def intensity_g_per_kwh(country_iso3: str) -> float:
    """Carbon intensity of the grid of ``country_iso3`` (ISO 3166 alpha-3), g CO2-eq per kWh."""
    data = _energy_mix()
    code = country_iso3.upper()
    if code not in data:
        close = difflib.get_close_matches(code, list(data), n=5)
        raise UnknownCountry(f"country {country_iso3!r} is not in CodeCarbon's energy-mix data"
                             + (f"; close codes: {', '.join(close)}" if close else "")
                             + " (ISO 3166 alpha-3 codes such as USA, FRA, DEU)")
    return float(data[code]["carbon_intensity"])


def co2_g(energy_j: float, country_iso3: str) -> float:
    """Grams of CO2-eq for ``energy_j`` joules drawn from the grid of ``country_iso3``."""
    return energy_j / J_PER_KWH * intensity_g_per_kwh(country_iso3)
