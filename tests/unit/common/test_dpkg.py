"""dpkg's status file: which packages are installed, so the roles run apt only when one is missing."""

from __future__ import annotations

from ansible_collections.kiosk.lxc.plugins.module_utils.common import dpkg

STATUS = """\
Package: libvirt-clients
Status: install ok installed
Priority: optional
Architecture: amd64
Version: 9.0.0-4
Description: Programs for the libvirt library
 Package: not-a-package-line
 Status: install ok installed

Package: debootstrap
Status: deinstall ok config-files
Architecture: all

Package: dnsmasq-base
Status: hold ok installed
Architecture: amd64

Package: iproute2
Status: install ok half-configured
Architecture: amd64

Package: libc6
Status: install ok installed
Architecture: amd64

Package: libc6
Status: install ok unpacked
Architecture: i386
"""


def test_only_fully_installed_packages_count(tmp_path):
    status = tmp_path / "status"
    status.write_text(STATUS)
    # config-files left behind, half-configured: apt has work to do; held and installed: nothing to do.
    assert dpkg.installed(str(status)) == {"libvirt-clients", "dnsmasq-base", "libc6"}


def test_missing_keeps_order_and_leaves_what_it_cannot_tell_to_apt(tmp_path):
    status = tmp_path / "status"
    status.write_text(STATUS)
    have = dpkg.installed(str(status))
    asked = ["debootstrap", "libvirt-clients", "not-a-package-line", "libc6:i386", "libc6=2.36", "lib*", "debootstrap"]
    assert dpkg.missing(asked, have) == ["debootstrap", "not-a-package-line", "libc6:i386", "libc6=2.36", "lib*"]
    assert dpkg.missing(["libvirt-clients", "dnsmasq-base"], have) == []


def test_no_status_file_means_nothing_is_installed(tmp_path):
    assert dpkg.installed(str(tmp_path / "none")) == set()
