"""The commissioning page (`web.enabled`): a small HTTP server on its own thread, read from the running daemon.

Serves device/web/index.html (one self-contained file: no CDN, nothing fetched from elsewhere) and
its JSON API: /api/status (state, score, threshold, level, faults, model, the last windows' scores),
/api/spectrogram (log-mel frames of the last seconds of the ring buffer, computed on request only),
/api/events (the last event messages with their evidence files), /api/evidence/<name> (one WAV or
PNG) and POST /api/command, which queues the command on Runner.handle_command: the path MQTT
commands take, with the same argument table (device/mqtt/commands.py), run on the analysis thread.

Security, kept simple:
- a token (web.token_file or web.token_credential, at least 16 characters) is required on every
  request: `Authorization: Bearer <token>`, or a cookie. `GET /?token=<token>` once sets the cookie
  (HttpOnly, SameSite=Strict) and redirects to `/`, so the token leaves the address bar; the cookie
  holds HMAC(token, "session"), not the token. Every comparison is hmac.compare_digest.
- CSRF: reads are harmless; a POST with the cookie must also carry `X-Acmon-CSRF`, HMAC(token,
  "csrf"), which only an authenticated page can read (it is in the page's HTML). A custom header
  cannot be sent cross-site without a CORS preflight, which this server never answers, and the
  SameSite=Strict cookie is not sent cross-site either: two independent locks. A POST with the
  Bearer header needs no CSRF token (a browser cannot add that header cross-site).
- bounded: bodies of at most 4 KiB (413 beyond), 10 s socket timeout, at most 16 connections at
  once, evidence names matched whole against the evidence stem pattern and opened without
  following links; refusals are one log line (at most 20 a minute); the client never sees a traceback.
- plain HTTP: on a LAN (host 0.0.0.0) the token crosses it readable; commissioning is short and
  local, and the docs say so. Strict Content-Security-Policy (hashes of the inline script and style).

Memory (benchmarks/bench_daemon.py --mqtt, 1 h of audio replayed, steady RSS): 73.6 MB without the page,
74.7 MB with it served and nobody looking (--web --web-idle: http.server, its imports and the ring's 12 s of
audio history, WEB_HISTORY_SECONDS in runner.py), 78.6 MB with a page open and polling (--web: its request
threads and the spectrogram's arrays). One run each on a shared 2-core machine: differences of a few
tenths of a MB are noise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import logging
import math
import re
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..errors import AcmonError
from ..evidence.clips import EVIDENCE_NAME, MAX_EVIDENCE_FILE_BYTES, evidence_files, withheld_reason
from ..mqtt.commands import MAX_COMMAND_DEPTH, check_args
from ..mqtt.payloads import iso_utc, loads_untrusted_json
from ..pipeline import logmel_image
from ..settings.schema import WebConfig
from ..settings.secret_files import resolve_web_token
from ..state import read_small_file

logger = logging.getLogger(__name__)

SPECTROGRAM_SECONDS = 6.0  # audio shown by the scrolling spectrogram; the ring keeps more (runner.py)
MIN_SPECTROGRAM_RANGE_DB = 20.0  # the narrowest span of the spectrogram's colours
MAX_BODY_BYTES = 4096
MAX_CONNECTIONS = 16
REQUEST_TIMEOUT_SECONDS = 10.0
COMMAND_REPLY_SECONDS = 5.0  # how long a POST waits for the analysis thread's reply
CALIBRATE_REFUSAL_SECONDS = 1.5  # calibrate replies when done (minutes later): wait only for a refusal
COOKIE_NAME = "acmon_session"
COOKIE_MAX_AGE_SECONDS = 12 * 3600
# Commands the page may send: no model updates or evidence over MQTT from a browser.
WEB_COMMANDS = ("ping", "mute", "calibrate", "set_threshold", "reload", "label")
CONTENT_TYPES = {".wav": "audio/wav", ".flac": "audio/flac", ".png": "image/png"}  # every EVIDENCE_SUFFIXES
CSRF_PLACEHOLDER = "__ACMON_CSRF__"
REFUSAL_LOG_PER_MINUTE = 20


class _RefusalLog:
    """One warning line per refused request, at most REFUSAL_LOG_PER_MINUTE a minute (a scanner must not flood
    the journal); the number left out is said with the next line logged."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._minute = 0
        self._count = 0
        self._skipped = 0

    def __call__(self, client: str, method: str, path: str, status: int, why: str) -> None:
        minute = int(time.monotonic() // 60)
        with self._lock:
            if minute != self._minute:
                self._minute, self._count = minute, 0
            self._count += 1
            if self._count > REFUSAL_LOG_PER_MINUTE:
                self._skipped += 1
                return
            skipped, self._skipped = self._skipped, 0
        more = f" ({skipped} more refusals not logged)" if skipped else ""
        logger.warning("web: refused %s %s from %s: %d %s%s", method, ascii(path[:80]), client, status, why, more)


class _Server(http.server.ThreadingHTTPServer):
    """ThreadingHTTPServer with a bound on connections served at once and one-line errors."""

    daemon_threads = True
    block_on_close = False
    app: WebServer

    def __init__(self, address: tuple[str, int], handler: type, app: WebServer):
        self.app = app
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self.app.refusal(str(client_address[0]), "-", "-", 503, f"more than {MAX_CONNECTIONS} connections")
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # socketserver prints a traceback to stderr; a dropped connection is one line
        import sys  # noqa: PLC0415

        exc = sys.exc_info()[1]
        logger.info("web: connection from %s ended: %s", client_address[0], type(exc).__name__)


class WebServer:
    """The commissioning page of one Runner; start() reads the token and binds, stop() closes.

    Args:
        runner: the Runner (duck-typed: the attributes read are those in status(), spectrogram(), events()).
        cfg: the web section.
    """

    def __init__(self, runner: Any, cfg: WebConfig):
        self.runner, self.cfg = runner, cfg
        self.host, self.port = cfg.host, cfg.port
        self.refusal = _RefusalLog()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._token = b""
        self.session_value = ""
        self.csrf_value = ""
        self.page = b""
        self.csp = ""
        self.calibration: dict[str, Any] | None = None  # the last calibrate sent from the page, and its outcome
        self._spectrogram_lock = threading.Lock()
        self._spectrogram_cache: tuple[tuple[int, int], dict[str, Any]] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Raises: AcmonError: no usable token, the page is missing, or the address cannot be bound (one line)."""
        token = resolve_web_token(self.cfg)
        self._token = token.encode("utf-8")
        self.session_value = hmac.new(self._token, b"acmon web session", hashlib.sha256).hexdigest()
        self.csrf_value = hmac.new(self._token, b"acmon web csrf", hashlib.sha256).hexdigest()
        self.page, self.csp = load_page(self.csrf_value)
        try:
            self._server = _Server((self.host, self.port), _Handler, self)
        except OSError as exc:
            raise AcmonError(
                f"web: cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); choose another web.port "
                "or stop what uses it"
            ) from None
        self.port = self._server.server_address[1]  # port 0 picks a free one (tests)
        self._thread = threading.Thread(target=self._server.serve_forever, name="acmon-web", daemon=True)
        self._thread.start()
        logger.info("commissioning page on http://%s:%d/ (open it once with ?token=<token>)", self.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    # -- authentication ------------------------------------------------------

    def token_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self._token)

    def session_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self.session_value.encode())

    def csrf_ok(self, candidate: str) -> bool:
        return hmac.compare_digest(candidate.encode("utf-8", "replace"), self.csrf_value.encode())

    # -- data (read on the server's threads; the Runner's plain values are written whole) --------------

    def status(self) -> dict[str, Any]:
        r = self.runner
        windows = list(r.recent_windows)  # deque copied in C under the GIL: a consistent snapshot
        meta = r.model.metadata
        muted_until = r.muted_until_wall
        return {
            "device": {"id": r.cfg.device.id, "site": r.cfg.device.site},
            "state": r.state,
            "score": _finite(r.last_score),
            "threshold": _finite(r.settings.threshold),
            "level_dbfs": _finite(windows[-1][2]) if windows else None,
            "muted_until": iso_utc(muted_until) if muted_until > time.time() else None,
            "faults": dict(r.health.faults),
            "model": {"name": meta.name, "version": meta.version, "sha256": r.model.sha256[:16]},
            "source": r.source_name,
            "uptime_seconds": round(r.uptime_seconds, 1),
            "windows_total": r.windows_total,
            "alarms_started": r.alarms_started,
            "period": dict(r.last_period or {}),
            "recent": [[round(t, 3), _finite(score), _finite(level)] for t, score, level in windows],
            "calibration": dict(self.calibration) if self.calibration else None,
            "time": time.time(),
        }

    def spectrogram(self) -> dict[str, Any]:
        """Log-mel frames of the last SPECTROGRAM_SECONDS of the ring, as uint8 (0 = db_min, 255 = db_max).

        Computed on request only (a page polls once a second), and once per hop of new audio whatever
        the number of pages. The ring is read while the analysis thread writes it: the read stays well
        behind the write position (the ring keeps twice what is read), and a read that lost the race returns fewer frames.
        """
        r = self.runner
        ring, params = r.pipeline.ring, r.model.params
        written = ring.samples_written
        key = (id(ring), written // params.hop_samples)
        with self._spectrogram_lock:
            if self._spectrogram_cache is not None and self._spectrogram_cache[0] == key:
                return self._spectrogram_cache[1]
            want = int(SPECTROGRAM_SECONDS * params.sample_rate_hz)
            n = min(want, written, ring.capacity_samples // 2)
            try:
                samples = ring.read(written - n, n)
            except ValueError:  # a new stream began (the ring was reset) while reading
                samples = np.zeros(0, dtype=np.float32)
            image = logmel_image(samples, params)  # (frames, mels) in dB re full scale
            if len(image):
                # Colours over what is there (2nd to 99.5th percentile), so a steady machine still shows its
                # structure; at least MIN_SPECTROGRAM_RANGE_DB, so that silence does not look like a pattern.
                db_min, db_max = (float(v) for v in np.percentile(image, [2.0, 99.5]))
                db_min = min(db_min, db_max - MIN_SPECTROGRAM_RANGE_DB)
                scaled = np.clip((image - db_min) * (255.0 / (db_max - db_min)), 0, 255)
                data = base64.b64encode(scaled.astype(np.uint8).tobytes()).decode("ascii")
            else:
                db_max, db_min, data = 0.0, -MIN_SPECTROGRAM_RANGE_DB, ""
            result = {
                "frames": int(image.shape[0]),
                "mels": int(image.shape[1]),
                "seconds": round(n / params.sample_rate_hz, 3),
                "fmin_hz": params.fmin_hz,
                "fmax_hz": params.fmax_hz,
                "db_min": round(db_min, 1),
                "db_max": round(db_max, 1),
                "data": data,
            }
            self._spectrogram_cache = (key, result)
            return result

    def events(self) -> dict[str, Any]:
        """The last event messages, one per alarm (its latest message), newest first, with the evidence files
        that exist now (a clip is written evidence.post_roll_seconds after the start)."""
        r = self.runner
        latest: dict[str, dict[str, Any]] = {}
        for payload in list(r.outbox.recent_events):
            latest[payload["event_id"]] = payload
        directory = r.evidence.directory if r.evidence is not None else None
        out = []
        for payload in reversed(list(latest.values())):
            files = []
            withheld = payload.get("evidence_withheld")
            if directory is not None and payload.get("evidence"):
                # The clip (WAV or FLAC) first, then its PNG; or the speech guard's one line.
                found = evidence_files(directory, payload["event_id"])
                files = [path.name for path in sorted(found, key=lambda path: path.suffix == ".png")]
                withheld = withheld or withheld_reason(directory, payload["event_id"])
            out.append({**payload, "evidence_files": files, "evidence_withheld": withheld})
        return {"events": out}

    def evidence_file(self, name: str) -> tuple[bytes, str] | None:
        """(bytes, content type) of one evidence file, or None (not a valid name, no such file, evidence off)."""
        r = self.runner
        if r.evidence is None or not EVIDENCE_NAME.fullmatch(name):
            return None
        try:
            data = read_small_file(r.evidence.directory / name, MAX_EVIDENCE_FILE_BYTES)
        except OSError:
            return None
        return data, CONTENT_TYPES[Path(name).suffix]

    def command(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Check one POSTed command, queue it on the Runner as MQTT does, and wait for its reply.

        Returns:
            (HTTP status, JSON body): 200 done, 202 calibrate started (its result comes in /api/status),
            400 bad request, 422 refused by the daemon, 504 no reply in time.
        """
        try:
            request = loads_untrusted_json(body, MAX_COMMAND_DEPTH)
        except ValueError as exc:
            return 400, {"ok": False, "error": f"the body is not JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("name"), str):
            return 400, {"ok": False, "error": 'the body must be {"name": "<command>", "args": {...}}'}
        name, args = request["name"], request.get("args", {})
        if set(request) - {"name", "args"}:
            return 400, {"ok": False, "error": "unknown keys in the body: only name and args"}
        if name not in WEB_COMMANDS:
            return 400, {
                "ok": False,
                "error": f"unknown command {name[:40]!r}; the page sends: {', '.join(WEB_COMMANDS)}",
            }
        if not isinstance(args, dict):
            return 400, {"ok": False, "error": "args must be an object"}
        problem = check_args(name, args)
        if problem is not None:
            return 400, {"ok": False, "error": f"{name}: {problem}"}
        done = threading.Event()
        outcome: dict[str, Any] = {}
        calibrating = name == "calibrate"

        def reply(result: dict[str, Any] | None, error: str | None = None) -> None:
            outcome.update(result=result, error=error)
            if calibrating:
                self.calibration = {
                    "state": "failed" if error else "done",
                    "minutes": args["minutes"],
                    "result": result,
                    "error": error,
                    "time": iso_utc(time.time()),
                }
            done.set()

        if calibrating:
            self.calibration = {"state": "running", "minutes": args["minutes"], "time": iso_utc(time.time())}
        self.runner.handle_command(name, args, reply)
        if not done.wait(CALIBRATE_REFUSAL_SECONDS if calibrating else COMMAND_REPLY_SECONDS):
            if calibrating:
                return 202, {
                    "ok": True,
                    "accepted": True,
                    "note": f"calibrating: collecting {args['minutes']:g} min of audio; the result appears on this "
                    "page (and in the daemon's log) when it is done",
                }
            return 504, {
                "ok": False,
                "error": f"{name}: no reply within {COMMAND_REPLY_SECONDS:g} s; it may still run: see the daemon's log",
            }
        if outcome["error"] is not None:
            return 422, {"ok": False, "error": " ".join(str(outcome["error"]).split())}
        return 200, {"ok": True, "result": outcome["result"]}


def _finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become null."""
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), 6)


def load_page(csrf_value: str) -> tuple[bytes, str]:
    """The page (device/web/index.html) with its CSRF token filled in, and a Content-Security-Policy that allows
    exactly its inline script and style (by hash) and requests to this server only.

    Raises:
        AcmonError: the page is missing from the installation.
    """
    try:
        text = resources.files("device.web").joinpath("index.html").read_text(encoding="utf-8")
    except (OSError, ModuleNotFoundError) as exc:
        raise AcmonError(f"web: the page device/web/index.html is missing from the installation ({exc})") from None

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", text, flags=re.S)
        return " ".join(
            "'sha256-" + base64.b64encode(hashlib.sha256(b.encode("utf-8")).digest()).decode() + "'" for b in blocks
        )

    csp = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; img-src 'self'; "
        "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    # The token goes into a meta tag, outside the hashed script: the script's hash does not change with it.
    return text.replace(CSRF_PLACEHOLDER, csrf_value).encode("utf-8"), csp


class _Handler(http.server.BaseHTTPRequestHandler):
    """One request: authenticate, route, answer in JSON (or the page, or a file); never a traceback."""

    server: _Server
    timeout = REQUEST_TIMEOUT_SECONDS

    def version_string(self) -> str:
        return "acmon"  # no Python version for scanners

    # -- plumbing --------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("web: %s %s", self.address_string(), format % args)

    def _refuse(self, status: int, why: str) -> None:
        method, path = getattr(self, "command", None) or "-", getattr(self, "path", None) or "-"
        self.server.app.refusal(self.client_address[0], method, path, status, why)
        self._send_json(status, {"ok": False, "error": why})

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (malformed request line, long headers, unknown method): one JSON line.
        # A request line it could not parse leaves HTTP/0.9, which would send the body without a status line.
        self.close_connection = True
        if getattr(self, "request_version", "HTTP/0.9") in ("HTTP/0.9", ""):
            self.request_version = "HTTP/1.0"
        self._refuse(code, message or self.responses.get(code, ("error",))[0])

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload, allow_nan=False).encode(), "application/json")

    def _cookie(self) -> str:
        for part in self.headers.get("Cookie", "").split(";"):
            key, _, value = part.strip().partition("=")
            if key == COOKIE_NAME:
                return value
        return ""

    def _auth(self) -> str | None:
        """'bearer' or 'cookie' for an authenticated request, else None."""
        app = self.server.app
        header = self.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return "bearer" if app.token_ok(header[7:].strip()) else None
        cookie = self._cookie()
        return "cookie" if cookie and app.session_ok(cookie) else None

    def _guarded(self, method: Any) -> None:
        try:
            method()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True
        except Exception:  # a bug here must not reach the client (or stop the daemon): logged, 500
            logger.exception("web: internal error answering %s %s", self.command, self.path[:80])
            try:
                self._send_json(500, {"ok": False, "error": "internal error; see the daemon's log"})
            except OSError:
                pass

    # -- methods ---------------------------------------------------------------

    def do_GET(self) -> None:
        self._guarded(self._get)

    def do_HEAD(self) -> None:
        self._guarded(self._get)

    def do_POST(self) -> None:
        self._guarded(self._post)

    def _get(self) -> None:
        app = self.server.app
        url = urlsplit(self.path)
        path = url.path
        if path == "/" and url.query:
            query = parse_qs(url.query, max_num_fields=4)
            token = query.get("token", [""])[0]
            if not token or not app.token_ok(token):
                self._refuse(401, "wrong or missing token")
                return
            cookie = f"{COOKIE_NAME}={app.session_value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={COOKIE_MAX_AGE_SECONDS}"
            self._send(303, b"", "text/plain", {"Location": "/", "Set-Cookie": cookie})
            return
        if self._auth() is None:
            self._refuse(401, "wrong or missing token (open /?token=<token>, or send Authorization: Bearer)")
            return
        if path == "/":
            self._send(200, app.page, "text/html; charset=utf-8", {"Content-Security-Policy": app.csp})
        elif path == "/api/status":
            self._send_json(200, app.status())
        elif path == "/api/spectrogram":
            self._send_json(200, app.spectrogram())
        elif path == "/api/events":
            self._send_json(200, app.events())
        elif path.startswith("/api/evidence/"):
            found = app.evidence_file(path[len("/api/evidence/") :])
            if found is None:
                self._refuse(404, "no such evidence file")
                return
            data, content_type = found
            self._send(200, data, content_type, {"Content-Disposition": "inline"})
        else:
            self._refuse(404, "no such page")

    def _post(self) -> None:
        app = self.server.app
        self.close_connection = True  # the body may not have been read: never reuse the connection
        how = self._auth()
        if how is None:
            self._refuse(401, "wrong or missing token")
            return
        if how == "cookie" and not app.csrf_ok(self.headers.get("X-Acmon-CSRF", "")):
            self._refuse(403, "missing or wrong X-Acmon-CSRF header (send commands from the page)")
            return
        if urlsplit(self.path).path != "/api/command":
            self._refuse(404, "no such endpoint")
            return
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self._refuse(411, "a Content-Length is required")
            return
        length = int(length_header)
        if length > MAX_BODY_BYTES:
            self._refuse(413, f"body larger than {MAX_BODY_BYTES} bytes")
            return
        if self.headers.get_content_type() != "application/json":
            self._refuse(415, "the body must be application/json")
            return
        body = self.rfile.read(length)
        status, payload = app.command(body)
        if status >= 400:
            self.server.app.refusal(self.client_address[0], "POST", self.path, status, payload["error"])
        self._send_json(status, payload)
