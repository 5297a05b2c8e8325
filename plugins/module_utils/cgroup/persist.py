# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Persistent rules of a libvirt guest, kept in its <metadata> under DEVICES_NS.

    <metadata>
      <kioskdev:devices xmlns:kioskdev="http://kiosk.lxc/xmlns/devices/1">
        <kioskdev:rule type="c" major="alsa" minor="*" access="rw"/>
      </kioskdev:devices>
    </metadata>

Majors are stored as the user gave them (a name stays a name) and resolved
from /proc/devices each time the hook applies them, so a dynamic major that
changes between boots is still right. Stdlib only: the libvirt hook reads
this with the domain XML libvirt hands it on stdin.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ansible_collections.kiosk.lxc.plugins.module_utils.cgroup.rules import RuleSpec, norm_access, parse_spec
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.common.namespaces import DEVICES_NS, DEVICES_PREFIX

ROOT = "devices"
PREFIX = DEVICES_PREFIX
URI = DEVICES_NS


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def specs_from_element(elem) -> tuple[list[RuleSpec], list[str]]:
    """(rules, problems) from a <devices> element; a malformed rule is a problem, not an error."""
    specs, problems = [], []
    for child in elem:
        if _local(child.tag) != "rule":
            continue
        item = {k: v for k, v in child.attrib.items() if k in ("type", "major", "minor", "access")}
        try:
            specs.append(parse_spec(item, option="metadata"))
        except KioskError as exc:
            problems.append(exc.msg)
    return specs, problems


def specs_from_metadata(xml_text: str | None) -> tuple[list[RuleSpec], list[str]]:
    """Rules from what virDomainGetMetadata returned for DEVICES_NS (None: no metadata)."""
    if not xml_text:
        return [], []
    try:
        return specs_from_element(ET.fromstring(xml_text))
    except ET.ParseError as exc:
        return [], [f"the stored device rules are not XML: {exc}"]


def specs_from_domain_xml(xml_text: str) -> tuple[list[RuleSpec], list[str]]:
    """Rules from a whole domain XML (what the libvirt hook gets on stdin)."""
    root = ET.fromstring(xml_text)
    elem = root.find(f"metadata/{{{URI}}}{ROOT}")
    return specs_from_element(elem) if elem is not None else ([], [])


def metadata_xml(specs: list[RuleSpec]) -> str | None:
    """The stored element (cgroup.device.rules_mutate puts it in the definition), or None when no rule is left."""
    if not specs:
        return None
    root = ET.Element(ROOT)
    for spec in specs:
        ET.SubElement(
            root,
            "rule",
            type=spec.type,
            major="*" if spec.major is None else str(spec.major),
            minor="*" if spec.minor is None else str(spec.minor),
            access=spec.access,
        )
    return ET.tostring(root, encoding="unicode")


def _key(spec: RuleSpec, majors) -> tuple:
    """Specs are the same entry when they resolve to the same majors (a name or its number)."""
    try:
        resolved = tuple(sorted(r.major if r.major is not None else -1 for r in spec.resolve(majors)))
    except KioskError:
        resolved = (spec.major,)
    return (spec.type, resolved, spec.minor)


def stored_present(stored: list[RuleSpec], wanted: list[RuleSpec], majors) -> list[RuleSpec]:
    """stored with each wanted rule added (access merged into the same entry)."""
    result = list(stored)
    for spec in wanted:
        for i, old in enumerate(result):
            if _key(old, majors) == _key(spec, majors):
                result[i] = RuleSpec(old.type, old.major, old.minor, norm_access(old.access + spec.access))
                break
        else:
            result.append(spec)
    return result


def stored_absent(stored: list[RuleSpec], wanted: list[RuleSpec], majors) -> list[RuleSpec]:
    """stored with each wanted rule's access taken away from its entry (empty entries dropped)."""
    result = []
    for old in stored:
        access = set(old.access)
        for spec in wanted:
            if _key(old, majors) == _key(spec, majors):
                access -= set(spec.access)
        if access:
            result.append(RuleSpec(old.type, old.major, old.minor, norm_access(access)))
    return result
