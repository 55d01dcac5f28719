"""The project's patches to FerretDB pass FerretDB's own tests of the code they change."""

from __future__ import annotations

import subprocess

import pytest

from newscrawl.local import ferretdb

# The packages the patches change and whose tests run here (internal/backends has tests too,
# but they need a PostgreSQL server).
PATCHED_PACKAGES = ["./internal/backends/sqlite/...", "./internal/handler/"]

pytestmark = pytest.mark.integration  # builds with Go and runs `go test`


def test_patches_apply_and_pass_ferretdbs_own_tests() -> None:
    if not ferretdb.patch_files():
        pytest.skip("no patches")
    source = ferretdb.patched_source(quiet=True)
    proc = subprocess.run(["go", "test", "-count=1", *PATCHED_PACKAGES], cwd=source,
                          env=ferretdb.go_env(), capture_output=True, text=True, timeout=1800)
    failures = [line for line in proc.stdout.splitlines() if line.startswith(("--- FAIL", "FAIL"))]
    assert proc.returncode == 0, "\n".join(failures) + proc.stderr[-3000:]
    assert proc.stdout.count("\nok ") + proc.stdout.startswith("ok ") == 4, proc.stdout
