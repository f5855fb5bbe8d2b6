"""systemd notify over a real unix datagram socket: READY once, WATCHDOG at most every half interval."""

from __future__ import annotations

import socket

from device.daemon.sdnotify import SystemdNotifier


def _listener(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2.0)
    return sock, path


def _drain(sock) -> list[bytes]:
    out = []
    sock.settimeout(0.2)
    try:
        while True:
            out.append(sock.recv(4096))
    except TimeoutError:
        return out


def test_ready_and_watchdog_reach_the_socket(tmp_path):
    sock, path = _listener(tmp_path)
    now = [0.0]
    n = SystemdNotifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, clock=lambda: now[0])
    n.ready("analysing")
    n.ready("again")  # READY=1 goes out once
    n.watchdog_tick()
    now[0] = 0.5
    n.watchdog_tick()  # within half the interval: not sent
    now[0] = 1.0
    n.watchdog_tick()
    n.stopping()
    assert _drain(sock) == [b"READY=1\nSTATUS=analysing", b"WATCHDOG=1", b"WATCHDOG=1", b"STOPPING=1"]
    n.close()
    sock.close()


def test_abstract_socket_address(tmp_path):
    name = f"acmon-test-{id(tmp_path)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
    assert sock.recv(100) == b"READY=1"
    sock.close()


def test_silent_without_systemd_and_for_another_pid():
    assert not SystemdNotifier({}).notify("READY=1")
    n = SystemdNotifier({"NOTIFY_SOCKET": "/nonexistent/sock", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert n.watchdog_seconds is None  # the watchdog is meant for another process
    assert not n.notify("READY=1")  # an unreachable socket is not an error
