"""The entry points limit BLAS to one thread; importing acmon changes nothing; a count the user exported wins."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.helpers import REPO

PROBE = """
import json, sys
import device, device.analysis.features
from threadpoolctl import threadpool_info
before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
from device.daemon.cli import limit_blas_threads
limit_blas_threads()
after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({"before": before, "after": after}))
"""


def _probe(**env: str) -> dict:
    clean = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
    }
    out = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, env={**clean, **env}, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_entry_points_limit_blas_to_one_thread_and_import_does_not():
    result = _probe()
    assert result["after"] and set(result["after"]) == {1}
    if os.cpu_count() and os.cpu_count() > 1:
        assert max(result["before"]) > 1  # importing device and its front end left the process alone


def test_a_thread_count_the_user_exported_wins():
    result = _probe(OPENBLAS_NUM_THREADS="2")
    assert result["after"] == result["before"]
