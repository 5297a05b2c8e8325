# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""XML namespaces the collection keeps in a libvirt domain's <metadata>.

Each module owns one namespace and must leave the others (and any foreign
metadata) untouched when it redefines a guest.
"""

from __future__ import annotations

# lxc_domain's `metadata` option: user key/values.
META_NS = "http://kiosk.lxc/xmlns/metadata/1"
META_PREFIX = "kiosk"
# cgroup_device's persistent rules, re-applied by the libvirt hook at start.
DEVICES_NS = "http://kiosk.lxc/xmlns/devices/1"
DEVICES_PREFIX = "kioskdev"
# sound_passthrough's card selectors, read by the hotplug agent.
SOUND_NS = "http://kiosk.lxc/xmlns/sound/1"
SOUND_PREFIX = "kiosksnd"
