"""Real download clients through a real dispatcher: aria2c (Metalink/HTTP headers, the
``.meta4`` document, Accept negotiation), curl -L and wget.

`mirrorhub serve` (in-process workers, SQLite) runs under uvicorn on 127.0.0.1; three nginx
mirrors listen on 127.0.0.2-4, because aria2 ignores duplicates on the redirector's own host.
One mirror holds a corrupted copy of ``pub/bad.bin``: same size and mtime, so no scan can
tell, and only a client that checks the digest notices.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import require
from tests.servers import free_port, make_tree, nginx_autoindex
from tests.test_end_to_end import Dispatcher, cli, serve, wait_until

T0 = 1_700_000_000
BIG = random.Random(7).randbytes(8 * 1024 * 1024 + 123)  # several 1 MiB segments
BAD = random.Random(8).randbytes(3 * 1024 * 1024)
CORRUPT = random.Random(9).randbytes(len(BAD))  # same size: scans cannot notice
Q = "{urn:ietf:params:xml:ns:metalink}"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Site:
    url: str  # the dispatcher
    tmp: Path
    logs: dict[str, Path]  # mirror name -> nginx access log

    def served(self, name: str, path: str) -> int:
        log = self.logs[name]
        if not log.exists():
            return 0
        return sum(f"GET /{path} " in line for line in log.read_text().splitlines())


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("downloads")
    files = {"pub/big.bin": (BIG, T0), "pub/bad.bin": (BAD, T0)}
    origin = make_tree(tmp / "origin", files)
    trees = {
        "good2": make_tree(tmp / "m2", files),
        "bad3": make_tree(tmp / "m3", {**files, "pub/bad.bin": (CORRUPT, T0)}),
        "good4": make_tree(tmp / "m4", files),
    }
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MIRRORHUB_")},
        "MIRRORHUB_DATABASE_URL": f"sqlite:///{tmp / 'mirrorhub.db'}",
        "MIRRORHUB_ORIGIN_DIR": str(origin),
        "MIRRORHUB_GEOIP_DIR": str(tmp / "no-geoip"),  # no location: capacity decides
        "MIRRORHUB_ALLOW_PRIVATE_MIRRORS": "true",
        "MIRRORHUB_INDEX_REFRESH_SECONDS": "0.3",
        "MIRRORHUB_ORIGIN_WATCH_SECONDS": "0.3",
        "MIRRORHUB_PROBE_INTERVAL": "0.5",
    }
    cli(env, "db", "upgrade")
    logs: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:
        for n, (name, tree) in enumerate(trees.items(), start=2):
            work = tmp / f"nginx-{name}"
            logs[name] = work / "access.log"
            url = stack.enter_context(
                nginx_autoindex(
                    tree, f"127.0.0.{n}", workdir=work, extra=f"access_log {logs[name]};"
                )
            )
            # The corrupted mirror gets nearly all first picks, so every client meets it.
            capacity = "1000000" if name == "bad3" else "1000"
            cli(env, "mirror", "add", name, "--http", url, "--capacity", capacity)
        # One probe round first creates every mirror_state row: a first scan racing the first
        # probe to create it can fail (UNIQUE mirror_state.mirror_id) and back off for 60 s.
        cli(env, "probe", "--all")
        url = stack.enter_context(serve(env, free_port("127.0.0.1"), tmp / "serve.log"))
        d = Dispatcher(url)
        stack.callback(d.http.close)

        def ready() -> bool:
            return all(
                len(d.decision("/" + p, "127.0.0.1")["ranked"]) == 3 for p in files
            )  # every mirror scanned, fresh and ranked for both files

        def state() -> object:
            log = (tmp / "serve.log").read_text(errors="replace").splitlines()
            return d.decision("/pub/big.bin", ""), [x for x in log if "HTTP/1.1" not in x][-30:]

        wait_until(ready, 60, "scans of the three mirrors", state)
        yield Site(url, tmp, logs)


def aria2c(site: Site, *args: str, out: str) -> tuple[int, str, Path]:
    """Run aria2c kept local and bounded; returns (exit status, output, target dir)."""
    binary = shutil.which("aria2c")
    require(binary is not None, "aria2c not installed (Debian package aria2)")
    assert binary is not None
    target = site.tmp / out
    target.mkdir()
    done = subprocess.run(
        [
            binary,
            "--no-conf",
            "--max-tries=2",
            "--connect-timeout=5",
            "--timeout=10",
            "--check-certificate=false",
            f"--dir={target}",
            "--split=3",
            "--min-split-size=1M",
            "--max-connection-per-server=1",
            "--file-allocation=none",
            "--allow-overwrite=true",
            "--auto-file-renaming=false",
            "--summary-interval=0",
            "--enable-dht=false",
            "--metalink-preferred-protocol=http",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
    )
    return done.returncode, done.stdout + done.stderr, target


def test_aria2_uses_link_duplicates_and_digest_from_the_redirect(site: Site) -> None:
    before = {name: site.served(name, "pub/big.bin") for name in site.logs}
    # Accept: */* alone: the dispatcher answers the 302 (Link + Digest), not the document.
    rc, out, target = aria2c(site, "--header=Accept: */*", site.url + "/pub/big.bin", out="headers")
    assert rc == 0, out
    assert sha256((target / "big.bin").read_bytes()) == sha256(BIG)
    used = [n for n in site.logs if site.served(n, "pub/big.bin") > before[n]]
    assert len(used) >= 2, (used, out)  # segments came from several mirrors


def test_aria2_downloads_from_the_meta4_document(site: Site) -> None:
    r = httpx.get(site.url + "/pub/big.bin.meta4")
    f = ET.fromstring(r.content).find(Q + "file")  # noqa: S314 (our own output)
    assert f is not None and f.findtext(Q + "hash") == sha256(BIG)
    assert len(f.findall(Q + "url")) == 3
    rc, out, target = aria2c(
        site, "--follow-metalink=mem", site.url + "/pub/big.bin.meta4", out="meta4"
    )
    assert rc == 0, out
    assert sha256((target / "big.bin").read_bytes()) == sha256(BIG)
    assert not (target / "big.bin.meta4").exists()  # followed in memory


def test_aria2_negotiates_metalink_with_accept(site: Site) -> None:
    # aria2's own Accept names application/metalink4+xml: it gets the document and follows it.
    rc, out, target = aria2c(site, "--follow-metalink=mem", site.url + "/pub/big.bin", out="neg")
    assert rc == 0, out
    assert sha256((target / "big.bin").read_bytes()) == sha256(BIG)


@pytest.mark.parametrize(
    ("how", "args"),
    [
        ("headers", ["--split=1", "--header=Accept: */*", "/pub/bad.bin"]),
        ("meta4", ["--split=1", "--follow-metalink=mem", "/pub/bad.bin.meta4"]),
    ],
)
def test_aria2_detects_a_corrupted_mirror(site: Site, how: str, args: list[str]) -> None:
    # --split=1: the whole file from the first mirror aria2 is given (the corrupted one, by
    # its capacity). With segments from several mirrors, aria2 could drop the bad mirror's
    # connection once the others had every piece: its request logged, its bytes never used.
    before = site.served("bad3", "pub/bad.bin")
    rc, out, target = aria2c(site, *args[:-1], site.url + args[-1], out=f"bad-{how}")
    assert site.served("bad3", "pub/bad.bin") > before, out  # the bad copy was fetched
    # aria2 refuses the result: error status 32 is "checksum validation failed".
    assert rc == 32, out
    assert "checksum" in out.lower(), out
    result = target / "bad.bin"
    assert not result.exists() or sha256(result.read_bytes()) != sha256(BAD)


def test_curl_and_wget_follow_the_redirect(site: Site) -> None:
    curl, wget = shutil.which("curl"), shutil.which("wget")
    require(curl is not None and wget is not None, "curl and wget are needed (.ci/setup --test)")
    assert curl is not None and wget is not None
    c_out, w_out = site.tmp / "curl.bin", site.tmp / "wget.bin"
    subprocess.run(
        [curl, "-sSfL", "--max-time", "30", "-o", str(c_out), site.url + "/pub/big.bin"],
        check=True,
        timeout=60,
    )
    subprocess.run(
        [wget, "-q", "--tries=2", "--timeout=10", "-O", str(w_out), site.url + "/pub/big.bin"],
        check=True,
        timeout=60,
    )
    assert sha256(c_out.read_bytes()) == sha256(BIG)
    assert sha256(w_out.read_bytes()) == sha256(BIG)
    # The checksum file the dispatcher generates checks the download with sha256sum.
    r = httpx.get(site.url + "/pub/big.bin.sha256")
    assert r.text == f"{sha256(BIG)}  big.bin\n"
