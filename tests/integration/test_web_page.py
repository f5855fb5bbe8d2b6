"""The commissioning page of a running daemon: its HTTP API refused and answered as it should, and the page itself
driven in a real headless Chromium (Debian's chromium and chromium-driver, through Selenium): it draws the level
meter and the spectrogram, a screenshot is taken, and its Mute button mutes the daemon."""

from __future__ import annotations

import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO, demo_wav, free_port, require, stop_daemon, write_config

pytestmark = [pytest.mark.slow]

TOKEN = "0123456789abcdef-web-test-token"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1280, 900)


class Daemon:
    def __init__(self, proc: subprocess.Popen, port: int, log: Path, evidence: Path):
        self.proc, self.port, self.log, self.evidence = proc, port, log, evidence
        self.url = f"http://127.0.0.1:{port}"

    def request(
        self, path: str, token: str | None = TOKEN, method: str = "GET", body: bytes | None = None, headers=None
    ) -> tuple[int, dict, bytes]:
        """(status, headers, body) of one request; the token as a Bearer header unless None."""
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=h)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def json(self, path: str) -> dict:
        status, _, body = self.request(path)
        assert status == 200, body
        return json.loads(body)

    def command(self, payload: bytes, headers=None, token: str | None = TOKEN) -> tuple[int, dict]:
        status, _, body = self.request(
            "/api/command", token, "POST", payload, {"Content-Type": "application/json", **(headers or {})}
        )
        return status, json.loads(body)


def _wait(condition, what: str, daemon: Daemon, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"{what} within {timeout:g} s; daemon log:\n{daemon.log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def daemon(trained_model, demo_data, tmp_path_factory):
    folder = tmp_path_factory.mktemp("web")
    token_file = folder / "web-token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    port = free_port()
    evidence = folder / "evidence"
    wavs = [str(demo_wav(demo_data, "anomaly"))] + [str(demo_wav(demo_data, "normal", i)) for i in range(3)] * 10
    cfg = write_config(
        folder,
        trained_model,
        # Every window is above this threshold: an alarm (with its evidence clip) at once, until muted.
        model={"threshold": 1e-6},
        audio={"source": "wav", "wav_paths": wavs, "realtime": True},
        evidence={"enabled": True, "directory": str(evidence), "pre_roll_seconds": 1, "post_roll_seconds": 1},
        web={"enabled": True, "port": port, "token_file": str(token_file)},
    )
    log = folder / "daemon.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "device", "run", "--config", str(cfg)],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    d = Daemon(proc, port, log, evidence)

    def up() -> bool:
        assert proc.poll() is None, log.read_text()
        try:
            return d.request("/api/status")[0] == 200
        except OSError:
            return False

    _wait(up, "the page did not answer", d)
    yield d
    assert stop_daemon(proc) == 0, log.read_text()[-3000:]
    with pytest.raises(OSError):  # closed with the daemon
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_the_api_needs_the_token(daemon):
    for token in (None, "wrong", TOKEN[:-1], TOKEN + "x"):
        status, _, body = daemon.request("/api/status", token)
        assert status == 401, body
        assert json.loads(body)["ok"] is False
    status, _, _ = daemon.request("/", None, headers={"Cookie": "acmon_session=" + "0" * 64})
    assert status == 401
    status, _, _ = daemon.request("/?token=wrong", None)
    assert status == 401
    # The token once in the address: a cookie (HttpOnly, SameSite=Strict, not the token itself) and away from the URL
    status, headers, _ = daemon.request(f"/?token={TOKEN}", None)
    assert status == 303 and headers["Location"] == "/"
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    session = cookie.split(";")[0]
    status, headers, page = daemon.request("/", None, headers={"Cookie": session})
    assert status == 200 and b'<canvas id="spectrogram"' in page
    assert (
        "script-src 'sha256-" in headers["Content-Security-Policy"]
        and "unsafe" not in headers["Content-Security-Policy"]
    )
    assert headers["Server"] == "acmon"
    # A command with the cookie alone is refused (CSRF): the page adds the header it finds in its HTML
    ping = json.dumps({"name": "ping"}).encode()
    status, reply = daemon.command(ping, {"Cookie": session}, token=None)
    assert status == 403 and "X-Acmon-CSRF" in reply["error"]
    csrf = page.split(b'name="acmon-csrf" content="')[1].split(b'"')[0].decode()
    status, reply = daemon.command(ping, {"Cookie": session, "X-Acmon-CSRF": csrf}, token=None)
    assert status == 200 and reply["ok"] and reply["result"]["model_version"]


def test_status_spectrogram_events_and_evidence(daemon):
    status = daemon.json("/api/status")
    assert status["device"] == {"id": "pump-7", "site": "testsite"}
    assert status["threshold"] == pytest.approx(1e-6) and status["model"]["name"]
    recent = _wait(lambda: daemon.json("/api/status")["recent"], "no scored windows", daemon)
    assert all(len(row) == 3 for row in recent)
    assert -60 < daemon.json("/api/status")["level_dbfs"] < 0
    spec = _wait(lambda: (s := daemon.json("/api/spectrogram"))["frames"] >= 64 and s, "no spectrogram frames", daemon)
    assert spec["mels"] == 64 and len(spec["data"]) == 4 * ((spec["frames"] * spec["mels"] + 2) // 3)

    def clip():
        events = daemon.json("/api/events")["events"]
        return next((e for e in events if len(e["evidence_files"]) == 2), None)

    event = _wait(clip, "no event with its evidence files", daemon)
    assert event["schema"] == "acmon.event/1" and event["device_id"] == "pump-7"
    for name in event["evidence_files"]:
        status_code, headers, data = daemon.request(f"/api/evidence/{name}")
        assert status_code == 200
        if name.endswith(".png"):
            assert headers["Content-Type"] == "image/png" and data.startswith(b"\x89PNG")
        else:
            assert headers["Content-Type"] == "audio/wav" and data[:4] == b"RIFF"
        assert data == (daemon.evidence / name).read_bytes()


def test_bad_paths_and_bodies_are_refused_in_one_line(daemon):
    (daemon.evidence.parent / "secret.txt").write_text("not for the web")
    stem = "20260101T000000Z_0123456789ab"
    for path in [
        "/nope",
        "/api",
        "/api/status/../../etc/passwd",
        "/api/evidence/../secret.txt",
        "/api/evidence/..%2fsecret.txt",
        "/api/evidence/%2e%2e/secret.txt",
        f"/api/evidence/{stem}.wav",  # the right shape, no such clip
        f"/api/evidence/{stem}.txt",
        "/api/evidence/",
        "/index.html",
    ]:
        status, _, body = daemon.request(path)
        assert status == 404, (path, body)
        assert b"\n" not in body and b"Traceback" not in body and b"not for the web" not in body
    status, _, body = daemon.request("/api/status", method="POST", body=b"{}")
    assert status == 404
    ok = {"Content-Type": "application/json"}
    for payload, expected in [
        (b"x" * 4097, 413),
        (b"{", 400),
        (b"[]", 400),
        (b"\xff\xfe", 400),
        (b"[" * 100 + b"]" * 100, 400),
        (json.dumps({"name": "mute"}).encode(), 400),
        (json.dumps({"name": "mute", "args": {"minutes": -1}}).encode(), 400),
        (json.dumps({"name": "mute", "args": {"minutes": "30"}}).encode(), 400),
        (json.dumps({"name": "mute", "args": {"minutes": 30, "x": 1}}).encode(), 400),
        (json.dumps({"name": "mute", "args": [30]}).encode(), 400),
        (json.dumps({"name": "update_model", "args": {}}).encode(), 400),
        (json.dumps({"name": "mute", "args": {"minutes": 30}, "extra": 1}).encode(), 400),
        (json.dumps({"name": "calibrate", "args": {"minutes": 0.5}}).encode(), 422),  # the Runner's own refusal
    ]:
        status, _, body = daemon.request("/api/command", method="POST", body=payload, headers=ok)
        assert status == expected, (payload[:60], body)
        reply = json.loads(body)
        assert reply["ok"] is False and "\n" not in reply["error"] and "Traceback" not in reply["error"], reply
    status, _, _ = daemon.request("/api/command", method="POST", body=b"{}", headers={"Content-Type": "text/plain"})
    assert status == 415
    # Raw sockets: no Content-Length, a malformed request line, a silent client
    for raw in [
        b"POST /api/command HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n",
        b"GARBAGE\x00\x01 / HTTP/9\r\n\r\n",
        b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n",
    ]:
        with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
            s.sendall(raw)
            answer = s.recv(65536)
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.split()[1] in (b"400", b"411", b"414"), answer[:200]
        assert b"Traceback" not in answer and body.count(b"\n") == 0
    status, reply = daemon.command(json.dumps({"name": "ping"}).encode())
    assert status == 200 and reply["ok"]  # still serving


@pytest.mark.browser
def test_the_page_in_headless_chromium(daemon, tmp_path):
    require(Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists(), "Debian's chromium and chromium-driver")
    try:
        from PIL import Image
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait
    except ImportError as exc:
        require(False, f"selenium and pillow (the dev extra): {exc}")
        raise
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
        "--hide-scrollbars",
    ):
        options.add_argument(argument)
    # The system chromedriver, named explicitly: Selenium must not fetch a driver at run time.
    service = Service(executable_path=CHROMEDRIVER, log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        driver.set_page_load_timeout(30)
        driver.get(f"{daemon.url}/?token={TOKEN}")
        assert driver.current_url == f"{daemon.url}/"  # the token left the address bar
        cookies = {c["name"]: c for c in driver.get_cookies()}
        assert cookies["acmon_session"]["httpOnly"] and cookies["acmon_session"]["sameSite"] == "Strict"
        wait = WebDriverWait(driver, 60, poll_frequency=0.25)
        wait.until(lambda d: d.find_element(By.ID, "meter").get_attribute("data-level"))
        wait.until(lambda d: int(d.find_element(By.ID, "spectrogram").get_attribute("data-frames") or 0) >= 64)
        wait.until(lambda d: int(d.find_element(By.ID, "chart").get_attribute("data-points") or 0) >= 2)
        wait.until(lambda d: "PNG" in d.find_element(By.ID, "events").text)
        level = float(driver.find_element(By.ID, "meter").get_attribute("data-level"))
        assert -60 < level < 0
        width = driver.execute_script("return document.getElementById('meter-bar').getBoundingClientRect().width")
        assert width > 10  # the bar is drawn
        # The spectrogram canvas holds an image, not one colour
        spread = driver.execute_script(
            "const c = document.getElementById('spectrogram');"
            "const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            "let lo = 765, hi = 0; for (let i = 0; i < d.length; i += 4) {"
            "  const v = d[i] + d[i + 1] + d[i + 2]; lo = Math.min(lo, v); hi = Math.max(hi, v); }"
            "return hi - lo;"
        )
        assert spread > 200, spread
        shot = driver.get_screenshot_as_png()
        (tmp_path / "page.png").write_bytes(shot)
        if os.environ.get("ACMON_SCREENSHOT"):  # a copy to look at: ACMON_SCREENSHOT=page.png pytest ...
            Path(os.environ["ACMON_SCREENSHOT"]).write_bytes(shot)
        image = Image.open(io.BytesIO(shot))
        # The viewport's size in device pixels (the window less what headless Chromium keeps for itself)
        viewport = driver.execute_script(
            "return [Math.round(innerWidth * devicePixelRatio), Math.round(innerHeight * devicePixelRatio)]"
        )
        assert image.format == "PNG" and image.size == tuple(viewport) and viewport[0] == WINDOW[0]
        assert viewport[1] >= 600
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
        assert colours is not None and len(colours) > 100  # not blank: meter, spectrogram, chart, text
        assert driver.find_element(By.ID, "state").text in ("anomaly", "ok")
        assert "no such" not in driver.find_element(By.ID, "connection").text

        driver.find_element(By.ID, "mute").click()
        wait.until(lambda d: "muted_until" in d.find_element(By.ID, "command-result").text)
        wait.until(lambda d: d.find_element(By.ID, "state").text == "muted")
        assert "muted until" in driver.find_element(By.ID, "muted-until").text
        status = daemon.json("/api/status")
        assert status["state"] == "muted" and status["muted_until"]
    finally:
        driver.quit()
    assert "muted until" in daemon.log.read_text()


def test_refuses_to_start_without_a_usable_token(trained_model, demo_data, tmp_path):
    short = tmp_path / "short-token"
    short.write_text("abc\n")
    wav = str(demo_wav(demo_data, "normal"))
    base = {"source": "wav", "wav_paths": [wav], "realtime": False}
    cases = [
        ({"enabled": True, "port": 0}, "web: "),  # no token source: the schema refuses
        ({"enabled": True, "port": 0, "token_file": str(short)}, "at least 16 characters"),
        ({"enabled": True, "port": 0, "token_file": str(tmp_path / "missing")}, "web.token_file"),
        ({"enabled": True, "port": 0, "token_credential": "acmon-web"}, "CREDENTIALS_DIRECTORY"),
    ]
    for web, expected in cases:
        cfg = write_config(tmp_path, trained_model, audio=base, web=web)
        out = subprocess.run(
            [sys.executable, "-m", "device", "run", "--config", str(cfg)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
        assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr
        assert len(errors) == 1 and expected in errors[0] and "abc" not in errors[0], out.stderr


def test_the_page_is_package_data():
    assert '"web/index.html"' in (REPO / "pyproject.toml").read_text()  # installed with the package
    from device.daemon.web import load_page

    page, csp = load_page("f" * 64)
    assert b"f" * 64 in page and b"__ACMON_CSRF__" not in page
    assert b"http://" not in page and b"https://" not in page  # nothing fetched from elsewhere
    assert csp.count("'sha256-") == 2
