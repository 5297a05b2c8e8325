"""Shared fixtures: a real libvirtd, busybox guests, and the collection on sys.path.

The harness uses this machine's libvirtd if lxc:///system answers, otherwise it
starts one for the test session and stops it at the end. Under CI=true a
libvirtd that cannot be had fails the run; elsewhere the tests that need it
skip with one loud reason.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "lib"))
# module_utils import as ansible_collections.kiosk.lxc.plugins.module_utils...
sys.path.insert(0, str(REPO / "build" / "collections"))

import guest as guestlib
import libvirtd
import machine

# Unique per pytest session, so parallel sessions never remove each other's guests.
TEST_PREFIX = f"kt{secrets.token_hex(2)}-"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


_BEFORE: dict = {}


def pytest_sessionstart(session):
    _BEFORE.update(machine.snapshot())


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when its tests left something on the machine, or took something away.

    Only sessions that ran integration tests are checked: unit tests touch nothing of the machine, and a
    unit run beside someone else's integration run would otherwise see that run's guests come and go.
    """
    if not _BEFORE or not any(item.nodeid.startswith("tests/integration/") for item in session.items):
        return
    left = machine.leftovers(_BEFORE, machine.snapshot())
    if left:
        session.config.get_terminal_writer().line(
            "the test session did not leave the machine as it found it:\n  " + "\n  ".join(left), red=True
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true and the real libvirtd is not available: {reason}", pytrace=False)
    pytest.skip(f"NO REAL LIBVIRTD, test skipped: {reason}")


@pytest.fixture(scope="session")
def libvirt_daemon(tmp_path_factory):
    """(connection, started_here) for lxc:///system, started if needed."""
    if os.geteuid() != 0:
        _unavailable("tests against libvirtd's LXC driver must run as root")
    conn = libvirtd.try_connect()
    daemon = None
    if conn is None:
        daemon = libvirtd.Daemon(tmp_path_factory.mktemp("libvirtd"))
        try:
            conn = daemon.start()
        except libvirtd.HarnessError as exc:
            _unavailable(str(exc))
    yield conn
    libvirtd.remove_domains(conn, TEST_PREFIX)
    conn.close()
    if daemon is not None:
        daemon.stop()


@pytest.fixture
def libvirt_conn(libvirt_daemon):
    """The session's libvirt connection; test guests are removed after each test."""
    yield libvirt_daemon
    libvirtd.remove_domains(libvirt_daemon, TEST_PREFIX)


_counter = itertools.count(1)


@pytest.fixture
def guest_name(request):
    """A unique libvirt-safe guest name for this test, with the test prefix."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")[:40]
    return f"{TEST_PREFIX}{base[:40]}-{next(_counter)}"


@pytest.fixture
def busybox_rootfs(tmp_path):
    """Factory: busybox_rootfs(init_body="") -> Path of a fresh rootfs."""

    def make(init_body: str = "", name: str = "rootfs") -> Path:
        return guestlib.make_rootfs(tmp_path / name, init_body)

    return make
