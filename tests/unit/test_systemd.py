"""The systemd unit passes systemd-analyze verify cleanly and keeps a low exposure score."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from tests.helpers import REPO, require

UNIT = REPO / "systemd" / "acmon-device.service"


def _unit_for_this_machine(tmp_path):
    # The unit's paths are the Pi's (/opt/acmon); point them at this checkout so verify can check them.
    text = UNIT.read_text().replace("/opt/acmon/.venv/bin/python", sys.executable)
    path = tmp_path / UNIT.name
    path.write_text(text)
    return path


def test_unit_verifies_without_warnings(tmp_path):
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed (apt-get install systemd)")
    out = subprocess.run(
        ["systemd-analyze", "verify", str(_unit_for_this_machine(tmp_path))], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on warnings: read what it says about our unit.
    ours = [line for line in (out.stdout + out.stderr).splitlines() if "acmon-device" in line]
    assert ours == [], ours


def test_unit_security_exposure_is_low(tmp_path):
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze is not installed (apt-get install systemd)")
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", str(_unit_for_this_machine(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout + out.stderr)
    assert match, out.stdout + out.stderr
    assert float(match.group(1)) <= 3.0, out.stdout


def test_unit_essentials():
    text = UNIT.read_text()
    for line in ("Restart=always", "After=network-online.target", "LoadCredential=mqtt-password:", "--check-config",
                 "Type=notify", "NotifyAccess=main", "WatchdogSec="):
        assert line in text
