"""`mirrorhub serve` as a subprocess: counts are flushed on SIGINT and there after a restart."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from mirrorhub.geodb import write_asn_db, write_city_db
from tests.servers import free_port, make_tree
from tests.test_end_to_end import serve, wait_until

T0 = 1_700_000_000
BERLIN, PARIS = "192.0.2.10", "198.51.100.10"


def test_counts_survive_a_restart(db_url: str, tmp_path: Path) -> None:
    origin = make_tree(
        tmp_path / "origin",
        {
            "pub/a.iso": (300_000, T0),
            "pub/b.iso": (200_000, T0),
            "project/trace/mirrorhub": (b"1\n", T0),
        },
    )
    geo = tmp_path / "geo"
    geo.mkdir()
    write_city_db(
        geo / "city.mmdb",
        [("192.0.2.0/24", "DE", "EU", 52.52, 13.40), ("198.51.100.0/24", "FR", "EU", 48.86, 2.35)],
    )
    write_asn_db(geo / "asn.mmdb", [("192.0.2.0/24", 64500, "Example")])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MIRRORHUB_")},
        "MIRRORHUB_DATABASE_URL": db_url,
        "MIRRORHUB_ORIGIN_DIR": str(origin),
        "MIRRORHUB_ORIGIN_URL": "http://origin.example.org/",
        "MIRRORHUB_GEOIP_CITY_DB": str(geo / "city.mmdb"),
        "MIRRORHUB_GEOIP_ASN_DB": str(geo / "asn.mmdb"),
        "MIRRORHUB_TRUSTED_PROXIES": "127.0.0.1",
        "MIRRORHUB_INDEX_REFRESH_SECONDS": "0.3",
        "MIRRORHUB_STATS_FLUSH_SECONDS": "3600",  # only the shutdown flush writes
    }
    port = free_port("127.0.0.1")

    def get(http: httpx.Client, path: str, client: str, **headers: str) -> int:
        return http.get(path, headers={"x-forwarded-for": client, **headers}).status_code

    with serve(env, port, tmp_path / "serve1.log") as url, httpx.Client(base_url=url) as http:
        wait_until(lambda: http.get("/-/health").json()["files"] >= 2, 30, "the origin scan")
        assert get(http, "/pub/a.iso", BERLIN) == 302  # to the origin: no mirror
        for start in range(0, 300_000, 50_000):  # segments of the same download
            assert get(http, "/pub/a.iso", BERLIN, range=f"bytes={start}-") == 302
        for _ in range(3):
            assert http.head("/pub/a.iso", headers={"x-forwarded-for": BERLIN}).status_code == 302
        for _ in range(4):
            assert get(http, "/pub/a.iso", PARIS, range="bytes=0-") == 302
        assert get(http, "/pub/b.iso", PARIS) == 302
        body = http.get("/-/stats.json").json()
        assert body["downloads"] == 0  # nothing written yet
        assert body["live"]["counted_downloads"] == 3
        assert body["live"]["deduplicated_ranges"] == 9

    with serve(env, port, tmp_path / "serve2.log") as url, httpx.Client(base_url=url) as http:
        body = http.get("/-/stats.json").json()
        assert body["downloads"] == 3 and body["bytes"] == 800_000
        assert {f["path"]: f["downloads"] for f in body["files"]} == {
            "pub/a.iso": 2,
            "pub/b.iso": 1,
        }
        assert body["mirrors"] == [{"mirror": None, "downloads": 3, "bytes": 800_000}]
        assert {c["country"]: c["downloads"] for c in body["countries"]} == {"DE": 1, "FR": 2}
        assert body["live"]["counted_downloads"] == 0
        page = http.get("/-/stats")
        assert page.status_code == 200 and "pub/a.iso" in page.text
