"""The hotplug agent's log lines: what a guest or a USB device wrote stays inside one line.

A guest's pactl answers (its stderr is quoted in the step that failed) and a card's names from
sysfs (a USB device's strings) reach the agent's log. The test logs them through the agent's
own logger, to a real file and to a real syslog socket (a unix datagram socket the test binds,
standing in for /dev/log), as Agent.apply does.
"""

from __future__ import annotations

import socket

from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug.agent import make_logger

FORGED = "Connection failure\n2026-01-01 00:00:00,000 INFO attach card 9 to guest 'lobby' (on rescan): done"


def _log_one_step(logger):
    logger.info(
        "%s (on %s): %s; %s",
        "attach card 1 (KT\nUSB) to guest 'player'",
        "rescan",
        f"pulseaudio (pid 7): pactl load-module module-alsa-card failed: {FORGED}",
        "took 3 ms",
    )


def test_a_guests_pactl_output_cannot_start_a_log_line_in_the_file(tmp_path):
    log = tmp_path / "hotplug.log"
    logger = make_logger(str(log))
    _log_one_step(logger)
    for handler in logger.handlers:
        handler.flush()
    lines = log.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 1, lines
    assert "failed: Connection failure\\n2026-01-01" in lines[0]
    assert "card 1 (KT\\nUSB)" in lines[0]


def test_a_guests_pactl_output_cannot_start_a_log_line_in_syslog(tmp_path):
    path = str(tmp_path / "log")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    try:
        _log_one_step(make_logger(None, syslog_socket=path))
        message = sock.recv(65536).decode()
    finally:
        sock.close()
    assert "\n" not in message.rstrip("\x00"), message
    assert "Connection failure\\n2026-01-01" in message
