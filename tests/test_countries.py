from __future__ import annotations

import pytest

from mirrorhub import countries
from mirrorhub.geo import distance_km

# Reference geographic centres (rounded public values) and continents.
KNOWN = {
    "DE": ("EU", 51.17, 10.45),
    "FR": ("EU", 46.23, 2.21),
    "GB": ("EU", 54.0, -2.5),
    "US": ("NA", 39.8, -98.6),
    "BR": ("SA", -10.8, -53.1),
    "CN": ("AS", 35.86, 104.2),
    "IN": ("AS", 22.0, 79.0),
    "JP": ("AS", 36.2, 138.25),
    "AU": ("OC", -25.27, 133.78),
    "ZA": ("AF", -29.0, 25.0),
    "RU": ("EU", 61.5, 105.3),
    "CA": ("NA", 62.4, -96.5),  # Baker Lake
    "MX": ("NA", 23.6, -102.5),
    "EG": ("AF", 26.8, 30.8),
    "NZ": ("OC", -41.0, 174.0),
    "AR": ("SA", -38.4, -63.6),
    "SG": ("AS", 1.35, 103.82),
    "TR": ("AS", 39.0, 35.2),
    "AQ": ("AN", -80.0, 0.0),
}


@pytest.mark.parametrize("cc", sorted(KNOWN))
def test_known_countries(cc: str) -> None:
    continent, lat, lon = KNOWN[cc]
    assert countries.continent_of(cc) == continent
    centre = countries.centroid(cc)
    assert centre is not None
    limit = 600 if cc in ("RU", "CA", "AQ", "BR", "AR") else 400  # huge countries
    assert distance_km(lat, lon, *centre) < limit


def test_table_is_complete_and_well_formed() -> None:
    assert len(countries.COUNTRIES) >= 249
    seen = set()
    for cc, (continent, lat, lon) in countries.COUNTRIES.items():
        assert len(cc) == 2 and cc.isupper(), cc
        assert continent in countries.CONTINENTS, cc
        assert -90 <= lat <= 90 and -180 <= lon <= 180, cc
        seen.add(continent)
    assert seen == set(countries.CONTINENTS) == {"AF", "AN", "AS", "EU", "NA", "OC", "SA"}


def test_lookups() -> None:
    assert countries.is_country("DE")
    assert countries.is_country("de")
    assert not countries.is_country("ZZ")
    assert not countries.is_country("")
    assert countries.continent_of("br") == "SA"
    assert countries.continent_of("EU") is None  # a continent, not a country
    assert countries.centroid("ZZ") is None
    assert countries.CONTINENTS["OC"] == "Oceania"
