"""scripts/install.sh for real: under a test root (ACMON_ROOT), and with the real paths in a private mount namespace.

The module's tests share one installed root (its venv takes about 30 s to make): they run in file order, each
puts back what it changes, and the uninstall tests come last.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from device.audio.audio_io import write_wav
from tests.helpers import REPO, require, run_cli

pytestmark = [pytest.mark.slow]

INSTALL = REPO / "scripts" / "install.sh"
SETUP = REPO / "scripts" / "setup.sh"
UNIT = REPO / "systemd" / "acmon-device.service"
DEVICE_PACKAGES = ("libportaudio2", "alsa-utils")  # setup.sh --device-only's list on this architecture

CONFIG_TEXT = """\
# pump 7, as configured for the test
device:
  id: pump-7   # the machine
  site: testsite
model:
  path: {model}
mqtt:
  enabled: false
"""


def _install(root: Path | None, *args: str | Path, env: dict | None = None, timeout: float = 900):
    environ = {**os.environ, **(env or {})}
    if root is not None:
        environ["ACMON_ROOT"] = str(root)
    return subprocess.run(
        ["bash", str(INSTALL), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=environ
    )


def _ok(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _summary(stdout: str) -> dict[str, str]:
    """The summary's step lines: name -> text."""
    tail = stdout.split("Summary", 1)[1].splitlines()[1:]
    return {line.split()[0]: line.split(None, 1)[1] for line in tail if line.startswith("  ")}


def _errors(out: subprocess.CompletedProcess) -> list[str]:
    return [line for line in out.stderr.splitlines() if "error" in line.lower()]


def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root with its mode, size, modification time and link target."""
    entries = {}
    for path in [root, *root.rglob("*")]:
        st = path.lstat()
        target = os.readlink(path) if path.is_symlink() else None
        entries[str(path.relative_to(root))] = (st.st_mode, st.st_size, st.st_mtime_ns, target)
    return entries


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _require_device_packages() -> None:
    missing = [
        pkg
        for pkg in DEVICE_PACKAGES
        if subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True).stdout
        != "install ok installed"
    ]
    # As root setup.sh installs them itself; otherwise it stops and prints the apt-get line.
    require(not missing or os.geteuid() == 0, f"Debian packages missing: {' '.join(missing)} (run scripts/setup.sh)")


@pytest.fixture(scope="module")
def installed(trained_model, tmp_path_factory):
    """A test root with acmon installed from this checkout (mic check off), its config and the first output."""
    _require_device_packages()
    root = tmp_path_factory.mktemp("acmon-root")
    config = tmp_path_factory.mktemp("site") / "acmon.yaml"
    config.write_text(CONFIG_TEXT.format(model=trained_model / "model.tflite"))
    start = time.monotonic()
    out = _install(root, "--config", config, "--no-mic-check")
    seconds = time.monotonic() - start
    print(f"first install under ACMON_ROOT: {seconds:.1f} s")  # measured: 28 s, most of it pip
    return root, config, _ok(out)


def test_install_lays_out_code_venv_config_and_unit(installed):
    root, config, stdout = installed
    opt, etc, state = root / "opt/acmon", root / "etc/acmon", root / "var/lib/acmon"
    steps = _summary(stdout)
    assert steps["config"].startswith("wrote ") and steps["venv"].startswith("installed")
    assert steps["check"] == f"{etc}/acmon.yaml: OK"
    assert "not started" in steps["unit"] and "changed something" in stdout
    # The device's code only, runnable from the venv.
    assert (opt / "device/__main__.py").is_file() and (opt / "firmware_tools/mic_check.py").is_file()
    assert not (opt / "training").exists() and not (opt / "tests").exists()
    assert _mode(opt / "scripts/install.sh") == 0o755 and _mode(opt / "pyproject.toml") == 0o644
    assert (opt / ".venv/bin/python").exists() and "device" in (opt / ".venv/.acmon-installed").read_text()
    # /etc/acmon and the state directory, private to the service.
    assert _mode(etc) == 0o750 and _mode(state) == 0o700
    assert _mode(etc / "acmon.yaml") == 0o640
    assert (etc / "acmon.yaml").read_bytes() == config.read_bytes()  # no bundle: the config as given
    # The unit as shipped, enabled as systemctl would (absolute link from multi-user.target.wants).
    unit = root / "etc/systemd/system/acmon-device.service"
    assert unit.read_bytes() == UNIT.read_bytes() and _mode(unit) == 0o644
    link = root / "etc/systemd/system/multi-user.target.wants/acmon-device.service"
    assert os.readlink(link) == "/etc/systemd/system/acmon-device.service"


def test_a_second_run_changes_nothing(installed):
    root, config, _ = installed
    before = _snapshot(root)
    start = time.monotonic()
    stdout = _ok(_install(root, "--config", config, "--no-mic-check"))
    print(f"second install: {time.monotonic() - start:.1f} s")  # measured: 2.3 s
    assert "Nothing changed" in stdout
    for name, text in _summary(stdout).items():
        assert text.startswith(("unchanged", "skipped", "not checked", f"{root}/etc/acmon/acmon.yaml: OK")), (
            name,
            text,
        )
    assert _snapshot(root) == before  # not a byte, mode or modification time


def test_the_installed_copy_installs_in_place(installed):
    root, config, _ = installed
    out = subprocess.run(
        ["bash", str(root / "opt/acmon/scripts/install.sh"), "--config", str(config), "--no-mic-check"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ACMON_ROOT": str(root)},
    )
    steps = _summary(_ok(out))
    assert steps["code"] == f"in place: {root}/opt/acmon is this checkout" and "Nothing changed" in out.stdout


def test_an_existing_config_is_kept_and_the_new_one_written_beside_it(installed, tmp_path):
    root, config, _ = installed
    conf = root / "etc/acmon/acmon.yaml"
    edited = conf.read_text() + "# tuned on site\n"
    conf.write_text(edited)
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("pump-7", "pump-8"))
    try:
        out = _install(root, "--config", other, "--no-mic-check")
        steps = _summary(_ok(out))
        assert conf.read_text() == edited  # never overwritten
        assert (root / "etc/acmon/acmon.yaml.new").read_text() == other.read_text()
        assert _mode(root / "etc/acmon/acmon.yaml.new") == 0o640
        assert steps["config"].startswith(f"kept {conf} as it is; the new one from {other} is beside it")
        steps = _summary(_ok(_install(root, "--config", other, "--no-mic-check")))
        assert steps["config"] == f"kept {conf} as it is; {conf}.new unchanged"
    finally:
        conf.write_text(config.read_text())
        (root / "etc/acmon/acmon.yaml.new").unlink(missing_ok=True)


def test_a_config_the_daemon_would_refuse_stops_the_install(installed, tmp_path):
    root, config, _ = installed
    conf = root / "etc/acmon/acmon.yaml"
    conf.unlink()
    bad = tmp_path / "bad.yaml"
    bad.write_text(config.read_text().replace("path: ", "path: /nonexistent"))
    try:
        out = _install(root, "--config", bad, "--no-mic-check")
        assert out.returncode == 1
        lines = out.stderr.strip().splitlines()
        assert lines[-2].startswith(f"error: {conf}: model.path: /nonexistent"), out.stderr  # check-config's line
        assert lines[-1] == (
            f"install.sh: error: check-config refused {conf} (above): edit it, or give --config / --bundle, "
            "and run install.sh again"
        )
        assert "unit" not in _summary_or_steps(out.stdout)  # stopped before the unit step
    finally:
        conf.write_text(config.read_text())


def _summary_or_steps(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines() if line.startswith("  ")]


def test_the_microphone_check_reports_the_level(installed, pulse_sink, tmp_path):
    root, config, _ = installed
    t = np.arange(8 * 16000) / 16000
    tone = tmp_path / "tone.wav"
    write_wav(tone, 0.1 * np.sin(2 * np.pi * 440 * t), 16000)
    player = subprocess.Popen(["paplay", "--device=acmon_test", str(tone)], env={**os.environ, **pulse_sink})
    try:
        time.sleep(0.3)
        out = _install(root, "--config", config, env=pulse_sink)
    finally:
        player.terminate()
        player.wait(10)
    steps = _summary(_ok(out))
    assert steps["mic"] == "OK: level -23.0 dBFS, peak -20.0 dBFS", out.stdout
    assert "Nothing changed" in out.stdout  # a check, not a change


def test_no_microphone_is_a_warning_unless_required(installed, tmp_path):
    root, config, _ = installed
    if Path("/dev/snd").exists():
        pytest.skip("this machine has a sound card")
    no_audio = {"PULSE_SERVER": f"unix:{tmp_path}/none", "XDG_RUNTIME_DIR": str(tmp_path)}
    out = _install(root, "--config", config, env=no_audio)
    steps = _summary(_ok(out))
    assert steps["mic"] == "PROBLEM (the install goes on): no audio input device: PortAudio lists none"
    assert "install.sh: warning: microphone check: no audio input device" in out.stderr
    out = _install(root, "--config", config, "--mic-check", env=no_audio)
    assert out.returncode == 1
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith("install.sh: error: microphone check (--mic-check): no audio input device")
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--bundle", "/nonexistent/pump-7.acmon"], "--bundle /nonexistent/pump-7.acmon: no such file; give the path"),
        (["--config", "/nonexistent.yaml"], "--config /nonexistent.yaml: no such file"),
        (["--config"], "--config needs a value"),
        (["--trusted-keys", "/etc/passwd"], "--trusted-keys /etc/passwd: give a public key (NAME.pub"),
        (["--trusted-keys", "/nonexistent"], "--trusted-keys /nonexistent: no such file or folder"),
        (["--purge"], "--purge goes with --uninstall"),
        (["--uninstall", "--bundle", "x"], "--uninstall takes no --bundle"),
        (["--frobnicate"], "unknown option --frobnicate"),
    ],
)
def test_bad_arguments_are_refused_in_one_line_before_anything_changes(tmp_path, args, message):
    out = _install(tmp_path, *args)
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"install.sh: error: {message}"), out.stderr
    assert list(tmp_path.iterdir()) == []


def test_acmon_root_must_be_an_absolute_folder(tmp_path):
    for bad in ("relative/dir", str(tmp_path / "missing")):
        out = _install(None, env={"ACMON_ROOT": bad})
        assert out.returncode == 1
        assert out.stderr == f"install.sh: error: ACMON_ROOT={bad}: give an existing absolute folder (a test hook)\n"


def _tools(*args: str | Path) -> str:
    out = run_cli("firmware_tools", *map(str, args))
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_a_signed_bundle_is_verified_installed_and_pointed_to(installed, trained_model, tmp_path):
    root, config, _ = installed
    etc = root / "etc/acmon"
    conf = etc / "acmon.yaml"
    template = tmp_path / "template.yaml"
    template.write_text(CONFIG_TEXT.format(model="model.tflite  # replaced when installed"))
    bundle = tmp_path / "pump-7.acmon"
    _tools("bundle", trained_model, "--config", template, "-o", bundle)
    (tmp_path / "keys").mkdir()
    _tools("keygen", "--out", tmp_path / "keys" / "site")
    _tools("sign", bundle, "--key", tmp_path / "keys" / "site.key")
    saved = conf.read_bytes()
    conf.unlink()  # the bundle's config.yaml becomes the config only where there is none
    try:
        stdout = _ok(
            _install(root, "--bundle", bundle, "--trusted-keys", tmp_path / "keys" / "site.pub", "--no-mic-check")
        )
        steps = _summary(stdout)
        assert steps["bundle"].startswith(f"verified {bundle} (signature checked")
        assert (etc / "model.acmon").read_bytes() == bundle.read_bytes() and _mode(etc / "model.acmon") == 0o640
        assert _mode(etc / "trusted-keys") == 0o750 and _mode(etc / "trusted-keys/site.pub") == 0o640
        text = conf.read_text()
        assert "# pump 7, as configured for the test" in text and "# replaced when installed" in text  # comments kept
        model = yaml.safe_load(text)["model"]
        assert model == {"path": str(etc / "model.acmon"), "trusted_keys": str(etc / "trusted-keys")}
        assert steps["check"] == f"{conf}: OK"  # the daemon's loader accepts the signed bundle
        stdout = _ok(
            _install(root, "--bundle", bundle, "--trusted-keys", tmp_path / "keys" / "site.pub", "--no-mic-check")
        )
        assert "Nothing changed" in stdout

        # A tampered bundle, and an unsigned one while keys are installed: refused in one line, nothing replaced.
        tampered = tmp_path / "tampered.acmon"
        data = bytearray(bundle.read_bytes())
        data[len(data) // 2] ^= 0xFF
        tampered.write_bytes(bytes(data))
        unsigned = tmp_path / "unsigned.acmon"
        _tools("bundle", trained_model, "-o", unsigned)
        for bad in (tampered, unsigned):
            out = _install(root, "--bundle", bad, "--no-mic-check")
            assert out.returncode == 1
            assert _errors(out) == [out.stderr.strip().splitlines()[-1]], out.stderr
            assert _errors(out)[0].startswith(f"install.sh: error: --bundle {bad} refused, nothing installed from it: ")
            assert (etc / "model.acmon").read_bytes() == bundle.read_bytes()
    finally:
        conf.write_bytes(saved)
        shutil.rmtree(etc / "trusted-keys", ignore_errors=True)
        for name in ("model.acmon", "model.acmon.prev"):
            (etc / name).unlink(missing_ok=True)


def test_uninstall_keeps_the_site_files_and_purge_removes_them(installed):
    root, _, _ = installed
    steps = _summary(_ok(_install(root, "--uninstall")))
    assert steps["unit"].startswith("removed") and steps["code"].startswith(f"removed {root}/opt/acmon")
    assert not (root / "opt/acmon").exists() and not (root / "etc/systemd/system/acmon-device.service").exists()
    assert not (root / "etc/systemd/system/multi-user.target.wants").exists()
    assert (root / "etc/acmon/acmon.yaml").is_file() and (root / "var/lib/acmon").is_dir()
    assert "Nothing changed" in _ok(_install(root, "--uninstall"))
    steps = _summary(_ok(_install(root, "--uninstall", "--purge")))
    assert steps["files"] == f"removed {root}/etc/acmon and {root}/var/lib/acmon"
    assert not (root / "etc/acmon").exists() and not (root / "var/lib/acmon").exists()


def test_install_and_setup_scripts_pass_bash_n_and_shellcheck():
    for script in (INSTALL, SETUP):
        out = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
    require(shutil.which("shellcheck") is not None, "shellcheck is not installed (apt-get install shellcheck)")
    out = subprocess.run(["shellcheck", str(INSTALL), str(SETUP)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


NAMESPACE_SCRIPT = """\
set -euo pipefail
for d in etc opt var; do
  mkdir -p "$T/$d/up" "$T/$d/work"
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$T/$d/up,workdir=$T/$d/work" "/$d"
done
install -D -m 644 "$MODEL" /opt/acmon-test-model/model.tflite  # where the service user can read it
bash "$INSTALL" --config "$CONFIG" --no-mic-check
echo "@@ $(stat -c '%U:%G %a' /etc/acmon /etc/acmon/acmon.yaml /var/lib/acmon /opt/acmon | tr '\\n' ' ')"
echo "@@ groups $(id -nG acmon) shell $(getent passwd acmon | cut -d: -f6,7)"
echo "@@ acmon may write /etc/acmon: $(setpriv --reuid=acmon --regid=acmon --init-groups sh -c 'touch /etc/acmon/x 2>/dev/null && echo yes || echo no')"
bash "$INSTALL" --config "$CONFIG" --no-mic-check | tail -n 2
bash "$INSTALL" --uninstall --purge >/dev/null
echo "@@ after purge: user $(id -u acmon >/dev/null 2>&1 && echo left || echo gone), $(ls -d /etc/acmon /var/lib/acmon /opt/acmon 2>/dev/null | wc -l) folders left"
"""


def test_real_paths_user_and_owners_in_a_private_mount_namespace(trained_model, tmp_path):
    """The paths a Pi gets (/opt, /etc, /var on overlays of this machine's, in a mount namespace of their own):
    the acmon user is created, files are root:acmon, check-config runs as acmon, and --purge removes the user."""
    _require_device_packages()
    # CI runs as root on a machine that allows mount namespaces: there these must hold (require fails under CI).
    require(os.geteuid() == 0 and shutil.which("unshare") is not None, "needs root and unshare (util-linux)")
    probe = subprocess.run(["unshare", "--mount", "true"], capture_output=True)
    require(probe.returncode == 0, f"mount namespaces are not permitted here ({probe.stderr.decode().strip()})")
    config = tmp_path / "acmon.yaml"
    config.write_text(CONFIG_TEXT.format(model="/opt/acmon-test-model/model.tflite"))
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", NAMESPACE_SCRIPT],
        capture_output=True,
        text=True,
        timeout=900,
        env={
            **os.environ,
            "T": str(tmp_path / "overlay"),
            "INSTALL": str(INSTALL),
            "CONFIG": str(config),
            "MODEL": str(trained_model / "model.tflite"),
        },
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    facts = [line[3:] for line in out.stdout.splitlines() if line.startswith("@@ ")]
    assert facts[0].split() == ["root:acmon", "750", "root:acmon", "640", "acmon:acmon", "700", "root:root", "755"], (
        facts
    )
    assert facts[1] == "groups acmon audio shell /var/lib/acmon:/usr/sbin/nologin", facts
    assert facts[2] == "acmon may write /etc/acmon: no"
    assert "Nothing changed" in out.stdout
    assert facts[3] == "after purge: user gone, 0 folders left", facts
