"""The hot path must not pull in the database layer, the admin, the workers or templates."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("sqlalchemy", "jinja2", "alembic", "mirrorhub.db", "mirrorhub.workers",
             "mirrorhub.web.admin", "mirrorhub.web.pages", "mirrorhub.services")  # fmt: skip


def test_redirect_module_imports_stay_light() -> None:
    code = "import sys, json, mirrorhub.web.redirect; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(out)
    assert "mirrorhub.web.redirect" in loaded
    bad = [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)]
    assert bad == []
