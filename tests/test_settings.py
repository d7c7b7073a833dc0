from __future__ import annotations

import dataclasses
import ipaddress
from pathlib import Path

import pytest

from mirrorhub.errors import SettingsError
from mirrorhub.settings import _PARSERS, Settings, async_url, env_name, load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_need_no_environment() -> None:
    s = load_settings({})
    assert s == Settings()
    assert s.async_database_url == "sqlite+aiosqlite:///mirrorhub.db"


def test_environment_beats_file_beats_default(tmp_path: Path) -> None:
    conf = tmp_path / "m.toml"
    conf.write_text('port = 9000\nhost = "0.0.0.0"\ntrusted_proxies = ["10.0.0.0/8", "::1"]\n')
    s = load_settings({"MIRRORHUB_PORT": "9100", "MIRRORHUB_CONFIG": str(conf)})
    assert (s.port, s.host) == (9100, "0.0.0.0")
    assert s.trusted_proxies == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("::1/128"),
    )


@pytest.mark.parametrize(
    ("env", "name"),
    [
        ({"MIRRORHUB_PORT": "70000"}, "MIRRORHUB_PORT"),
        ({"MIRRORHUB_DATABASE_URL": "mysql://x"}, "MIRRORHUB_DATABASE_URL"),
        ({"MIRRORHUB_TRUSTED_PROXIES": "10.0.0.0/8, bogus"}, "MIRRORHUB_TRUSTED_PROXIES"),
        ({"MIRRORHUB_ORIGIN_URL": "ftp://x/"}, "MIRRORHUB_ORIGIN_URL"),
        ({"MIRRORHUB_ALLOW_PRIVATE_MIRRORS": "maybe"}, "MIRRORHUB_ALLOW_PRIVATE_MIRRORS"),
        ({"MIRRORHUB_DISTANCE_BAND_FACTOR": "0.5"}, "MIRRORHUB_DISTANCE_BAND_FACTOR"),
        ({"MIRRORHUB_PROT": "80"}, "MIRRORHUB_PROT"),
        ({"MIRRORHUB_RANKING_CACHE_SIZE": "0"}, "MIRRORHUB_RANKING_CACHE_SIZE"),
        ({"MIRRORHUB_BAND_CACHE_SIZE": "many"}, "MIRRORHUB_BAND_CACHE_SIZE"),
    ],
)
def test_a_wrong_value_names_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError) as err:
        load_settings(env)
    assert err.value.setting == name and str(err.value).startswith(name)


def test_database_urls_map_to_async_drivers() -> None:
    assert async_url("sqlite:////var/lib/m.db") == "sqlite+aiosqlite:////var/lib/m.db"
    assert async_url("postgresql://u@h:5432/db") == "postgresql+asyncpg://u@h:5432/db"
    assert async_url("postgresql+asyncpg://u@h/db") == "postgresql+asyncpg://u@h/db"


def test_every_setting_is_parsed_and_documented() -> None:
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert fields == set(_PARSERS)
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [env_name(n) for n in sorted(fields) if f"`{env_name(n)}`" not in doc]
    assert missing == []


def test_allow_outdated_rules() -> None:
    s = load_settings({"MIRRORHUB_ALLOW_OUTDATED": "pub/=5, /pub/nightly/=60"})
    assert s.allow_outdated == (("pub/nightly/", 3600.0), ("pub/", 300.0))
    with pytest.raises(SettingsError):
        load_settings({"MIRRORHUB_ALLOW_OUTDATED": "pub/=soon"})
