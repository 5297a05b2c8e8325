"""The one libvirt connection helper: one sentence when libvirtd does not answer, the connection closed after use.

Real libvirt client library throughout: an unreachable libvirtd is a socket path that does not exist
(the remote driver really tries it), and a reachable one is libvirt's built-in test driver (test:///default),
which runs inside the client library with no daemon.
"""

from __future__ import annotations

import pytest
from ansible_collections.kiosk.lxc.plugins.module_utils.common import virt
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.hotplug.agent import Agent, make_logger


def _nowhere(tmp_path) -> str:
    return f"lxc+unix:///system?socket={tmp_path}/no-libvirtd/libvirt-sock"


@pytest.fixture
def libvirt_prints_errors():
    """libvirt's default error handler (it prints every error to stderr), as a process starts with it; tests/lib
    silences it for the whole session at import, so it is put back here, and the quiet one again after."""
    virt.libvirt.registerErrorHandler(None, None)
    yield
    virt.libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


def test_a_libvirtd_that_does_not_answer_is_one_sentence_naming_the_uri(tmp_path, capfd, libvirt_prints_errors):
    uri = _nowhere(tmp_path)
    with pytest.raises(KioskError) as err:
        virt.connect(uri)
    assert err.value.msg == (
        f"Cannot connect to libvirt at {uri}: Failed to connect socket to "
        f"'{tmp_path}/no-libvirtd/libvirt-sock': No such file or directory"
    )
    assert capfd.readouterr().err == ""  # libvirt's own printing of the error is silenced


def test_the_connection_is_closed_after_the_block():
    with virt.connection("test:///default") as conn:
        assert [d.name() for d in conn.listAllDomains()] == ["test"]
    with pytest.raises(virt.libvirt.libvirtError, match="invalid connection pointer"):
        conn.isAlive()


def test_every_module_takes_the_same_uri_option():
    assert virt.ARGUMENT_SPEC == {"uri": {"type": "str", "default": "lxc:///system"}}


def test_the_hotplug_agent_reports_a_libvirtd_that_does_not_answer_with_the_same_sentence(tmp_path):
    uri = _nowhere(tmp_path)
    agent = Agent(uri, context=object(), logger=make_logger(str(tmp_path / "agent.log")))
    with pytest.raises(KioskError, match=r"^Cannot connect to libvirt at .*: Failed to connect socket to "):
        agent._guests()
    assert Agent("test:///default", context=object(), logger=agent.log)._guests() == []  # no LXC guest there
