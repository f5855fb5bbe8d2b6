"""Model updates: the download's limits against a real HTTP server on loopback, and the update record's checks."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from device.daemon.updates import ModelUpdates, UpdateError, download, read_active, update_folder, write_active
from device.settings.config import config_from_dict

BODY = b"x" * 5000


class _Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if self.path == "/ok":
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)
        elif self.path == "/liar":  # declares a huge length
            self.send_response(200)
            self.send_header("Content-Length", str(10**12))
            self.end_headers()
        elif self.path == "/endless":  # no length, more than allowed
            self.send_response(200)
            self.end_headers()
            for _ in range(100):
                self.wfile.write(BODY)
        elif self.path == "/to-file":
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
        elif self.path == "/to-ok":
            self.send_response(302)
            self.send_header("Location", "/ok")
            self.end_headers()
        else:
            self.send_error(404)


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


SHA = hashlib.sha256(BODY).hexdigest()


def test_download_checks_hash_and_follows_http_redirects(server, tmp_path):
    assert download(f"{server}/ok", SHA, tmp_path, 10).read_bytes() == BODY
    assert download(f"{server}/to-ok", SHA, tmp_path, 10).name == f"{SHA}.acmon"
    assert not list(tmp_path.glob(".*part"))


@pytest.mark.parametrize(
    ("path", "sha", "needle"),
    [
        ("/ok", "0" * 64, "not the 0000"),
        ("/liar", SHA, "over the"),
        ("/endless", SHA, "more than"),
        ("/to-file", SHA, "file:///etc/passwd"),
        ("/missing", SHA, "404"),
    ],
)
def test_download_refusals_are_one_line_and_leave_nothing(server, tmp_path, path, sha, needle):
    with pytest.raises(UpdateError) as caught:
        download(f"{server}{path}", sha, tmp_path, 10, max_bytes=20000)
    assert needle in str(caught.value) and "\n" not in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_download_refuses_other_schemes_and_closed_ports(tmp_path):
    for url in ("ftp://127.0.0.1/x", "file:///etc/passwd", "http:///nohost"):
        with pytest.raises(UpdateError, match="http"):
            download(url, SHA, tmp_path, 1)
    with pytest.raises(UpdateError, match="cannot fetch"):
        download("http://127.0.0.1:9/x", SHA, tmp_path, 1)


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not json",
        b"[]",
        b'{"bundle": "../x.acmon", "config_model": "m", "status": "confirmed"}',
        b'{"bundle": "a.acmon", "config_model": "m", "status": "whatever"}',
        b'{"bundle": "a.acmon", "config_model": "m", "status": "confirmed", "previous": {"bundle": "/etc/x"}}',
        b"{" * 100000,
    ],
)
def test_a_damaged_update_record_falls_back_to_the_config_model(tmp_path, content):
    (tmp_path / "active.json").write_bytes(content)
    assert read_active(tmp_path) is None


def _cfg(model: str = "models/demo"):
    return config_from_dict({"device": {"id": "pump-7", "site": "lab"}, "model": {"path": model}})


def test_a_model_that_keeps_crashing_the_daemon_while_watched_is_dropped_at_start(tmp_path):
    cfg = _cfg()
    folder = update_folder(cfg)
    folder.mkdir(parents=True)
    (folder / "new.acmon").write_bytes(b"x")
    previous = {"bundle": "old.acmon", "config_model": "models/demo", "status": "confirmed", "version": "1"}
    record = {**previous, "bundle": "new.acmon", "status": "watching", "starts_watching": 0, "previous": previous}
    write_active(folder, record)
    for start in (1, 2, 3):
        updates = ModelUpdates(runner=None, cfg=cfg)
        assert updates.active is not None and updates.active["starts_watching"] == start
    updates = ModelUpdates(runner=None, cfg=cfg)  # the fourth start: back to the one before
    assert updates.active == previous and updates.last["status"] == "rolled_back"
    assert json.loads((folder / "active.json").read_text()) == previous
    assert not (folder / "new.acmon").exists()


def test_a_config_whose_model_path_changed_wins_over_the_update(tmp_path):
    cfg = _cfg()
    folder = update_folder(cfg)
    folder.mkdir(parents=True)
    write_active(folder, {"bundle": "a.acmon", "config_model": "models/other", "status": "confirmed"})
    assert ModelUpdates(runner=None, cfg=cfg).active is None


def test_update_folder_is_per_device():
    a = update_folder(_cfg())
    b = update_folder(config_from_dict({"device": {"id": "pump-8", "site": "lab"}}))
    assert a != b and a.parent == b.parent and isinstance(a, Path)
