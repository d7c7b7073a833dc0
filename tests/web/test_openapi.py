"""The OpenAPI document against the API: schemathesis over a real server on loopback.

schemathesis generates valid and invalid requests for every operation in
/-/api/openapi.json (with a valid token) and checks that no answer is a 5xx, every status,
content type and body matches the document, wrong methods get 405, and auth is enforced.
Set MH_SCHEMATHESIS_SEED to replay a run; MH_SCHEMATHESIS_EXAMPLES to go deeper.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from mirrorhub import services, tokens
from mirrorhub.db import repositories
from mirrorhub.db.migrate import upgrade_engine
from mirrorhub.db.models import OriginFileRow
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.settings import load_settings
from mirrorhub.web import api, openapi
from mirrorhub.web.app import create_app
from tests.conftest import require

CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_every_operation_of_ours_has_a_handler(tmp_path: Path) -> None:
    settings = load_settings({"MIRRORHUB_DATABASE_URL": f"sqlite:///{tmp_path}/x.db"})
    dispatcher = create_app(settings)
    handlers = dispatcher.inner.state.mirrorhub.extras["api"].handlers  # type: ignore[attr-defined]
    ours = {
        op.operation_id for op in openapi.OPERATIONS if op.ours and op.path.startswith("/-/api/")
    }
    assert ours == set(handlers)


def test_document_refs_and_path_parameters() -> None:
    doc = openapi.build_document()
    schemas = doc["components"]["schemas"]

    def refs(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if "$ref" in node else []
            return found + [r for v in node.values() for r in refs(v)]
        if isinstance(node, list):
            return [r for v in node for r in refs(v)]
        return []

    for ref in refs(doc):
        assert ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[1] in schemas
    for path, methods in doc["paths"].items():
        names = {p.strip("{}") for p in path.split("/") if p.startswith("{")}
        for op in methods.values():
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == names, (path, op["operationId"])


def test_resolver_matches_the_document() -> None:
    op, params = api.resolve("POST", "/-/api/mirrors/a.b/scan")
    assert op.operation_id == "scanMirror" and params == {"name": "a.b"}
    op, params = api.resolve("HEAD", "/-/api/files/pub/a b/x.iso")
    assert op.operation_id == "fileDecision" and params == {"path": "pub/a b/x.iso"}
    with pytest.raises(api.ApiError) as exc:
        api.resolve("GET", "/-/api/mirrors/a/b")
    assert exc.value.status == 404
    with pytest.raises(api.ApiError) as exc:
        api.resolve("DELETE", "/-/api/mirrors")
    assert exc.value.status == 405 and exc.value.headers == {"allow": "GET, HEAD, POST"}


async def _prepare(url: str) -> str:
    engine = create_engine(url)
    try:
        await upgrade_engine(engine)
        sessions = session_factory(engine)
        _, secret = await tokens.create_token(sessions, "schemathesis")
        # Mirrors to read back, so responses are checked against the Mirror schema too.
        for name in ("seeded", "other"):
            await services.add_mirror(
                sessions,
                {"name": name, "http_url": f"http://{name}.example.org/pub/", "country": "DE",
                 "networks": "192.0.2.0/24", "latitude": "50", "longitude": "8"},
            )  # fmt: skip
        async with sessions() as s:
            s.add(OriginFileRow(path="pub/x.iso", size=1 << 20, mtime=1, sha256="cd" * 32,
                                changed_at=1.0))  # fmt: skip
            await repositories.bump_version(s, files=None)
            await s.commit()
        return secret
    finally:
        await engine.dispose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _st() -> str | None:
    local = Path(sys.executable).with_name("st")
    return str(local) if local.exists() else shutil.which("st")


def test_schemathesis_finds_no_server_errors_or_mismatches(tmp_path: Path) -> None:
    st = _st()
    require(st is not None, "schemathesis is not installed (pip install -e '.[test]')")
    assert st is not None
    db = f"sqlite:///{tmp_path / 'api.db'}"
    token = asyncio.run(_prepare(db))
    port = _free_port()
    env = {
        **os.environ,
        "MIRRORHUB_DATABASE_URL": db,
        "MIRRORHUB_ALLOW_PRIVATE_MIRRORS": "true",
        "MIRRORHUB_GEOIP_DIR": str(tmp_path / "geoip"),
    }
    env = {k: v for k, v in env.items() if not k.startswith("MIRRORHUB_") or k in (
        "MIRRORHUB_DATABASE_URL", "MIRRORHUB_ALLOW_PRIVATE_MIRRORS", "MIRRORHUB_GEOIP_DIR")}  # fmt: skip
    log = (tmp_path / "server.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mirrorhub", "serve", "--no-workers", "--no-upgrade",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/-/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, (tmp_path / "server.log").read_text()
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.1)
        cmd = [
            st, "--config-file", str(CONFIG), "--no-color", "run", f"{base}/-/api/openapi.json",
            "-H", f"Authorization: Bearer {token}",
            "--max-examples", os.environ.get("MH_SCHEMATHESIS_EXAMPLES", "25"),
            "--request-timeout", "20",
        ]  # fmt: skip
        if os.environ.get("MH_SCHEMATHESIS_SEED"):
            cmd += ["--seed", os.environ["MH_SCHEMATHESIS_SEED"]]
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=540, cwd=tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    report = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, report
    assert "passed" in run.stdout and "failed" not in run.stdout.split("SUMMARY")[-1], report
    server_log = (tmp_path / "server.log").read_text()
    if "Traceback" in server_log:
        at = server_log.index("Traceback")
        pytest.fail("the server logged a traceback:\n" + server_log[max(0, at - 500) : at + 4000])
