# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
name: guests
short_description: The libvirt LXC guests of the kiosk hosts, one inventory host per guest
version_added: 0.1.0
description:
  - Reads the kiosk hosts from the inventory sources given before this one (the hosts of O(kiosk_group)), lists each
    kiosk's libvirt LXC guests and adds one inventory host per guest.
  - A kiosk with C(ansible_connection=local) is this machine and is read through libvirt directly on
    C(lxc:///system); any other kiosk through C(lxc+ssh://USER@HOST[:PORT]/system) (C(ansible_user), default
    C(root); C(ansible_host), C(ansible_port)), with its lease files copied over SSH (key-based, C(BatchMode)).
  - A running guest gets C(ansible_host) = the first IP the bridge's dnsmasq leased to its MAC (the files
    M(kiosk.lxc.lxc_bridge) keeps in O(leases_dir)); a stopped guest or one without a lease gets none.
  - A guest of a remote kiosk gets C(ansible_ssh_common_args) with C(-o ProxyJump=USER@KIOSK), so Ansible reaches
    it through its kiosk. A guest of this machine is reached directly over the bridge.
  - "Groups: O(group) (every guest), C(kiosk_<kiosk>), C(state_<state>) and, for a guest with cards passed in by
    M(kiosk.lxc.sound_passthrough), C(card_<key>_<value>) per card selector (C(card_all) when it takes every
    card). Characters a group name may not have become C(_)."
  - "Variables: each key of the guest's M(kiosk.lxc.lxc_domain) O(kiosk.lxc.lxc_domain#module:metadata) as a
    variable, C(kiosk_guest_kiosk), and C(kiosk_guest): what M(kiosk.lxc.lxc_domain_info) reports about the guest
    plus C(sound) (C(profile), C(selectors)) and C(kiosk)."
  - Results are cached with Ansible's inventory cache when O(cache) is on. Refresh with
    C(ansible-inventory --flush-cache) (or C(ansible-playbook --flush-cache)), after O(cache_timeout), or by
    deleting the cache.
  - The kiosks' variables are those of the inventory files plus, with O(use_vars_plugins), their C(group_vars/)
    and C(host_vars/) directories.
extends_documentation_fragment:
  - inventory_cache
  - constructed
options:
  plugin:
    description: Marks this file as a source for this plugin.
    type: str
    required: true
    choices: [kiosk.lxc.guests]
  kiosk_group:
    description: The inventory group whose hosts are the kiosks.
    type: str
    default: kiosks
  group:
    description: The group every guest is added to.
    type: str
    default: guests
  hostname:
    description: The inventory name of a guest; C({guest}) and C({kiosk}) are replaced.
    type: str
    default: "{guest}.{kiosk}"
  leases_dir:
    description: Directory of the per-bridge dnsmasq lease files on the kiosks.
    type: path
    default: /var/lib/kiosk-lxc
  proxy_jump:
    description: Reach the guests of remote kiosks through their kiosk (C(ProxyJump)).
    type: bool
    default: true
  use_vars_plugins:
    description:
      - Read the kiosks' C(group_vars/) and C(host_vars/) (and other vars plugins) too, so an C(ansible_user) set
        there is used. Ansible runs vars plugins only after inventory plugins unless asked.
    type: bool
    default: true
  unreachable:
    description: V(warn) skips a kiosk whose guests cannot be listed (with a warning); V(fail) stops.
    type: str
    choices: [warn, fail]
    default: warn
requirements:
  - libvirt-python and lxml on the controller
  - the ssh client, for remote kiosks
author:
  - kiosk.lxc contributors (@kiosk-lxc)
"""

EXAMPLES = r"""
# guests.kiosk.lxc.yml, used after the kiosks' own inventory:
#   ansible -i inventory/fleet -i guests.kiosk.lxc.yml guests -m ansible.builtin.ping
#   ansible-inventory -i inventory/fleet -i guests.kiosk.lxc.yml --graph --flush-cache
plugin: kiosk.lxc.guests
cache: true
cache_plugin: ansible.builtin.jsonfile
cache_connection: ~/.cache/kiosk-lxc-inventory
cache_timeout: 300
keyed_groups:
  - key: kiosk_guest.metadata.role | default('none')
    prefix: role
"""

import tempfile

from ansible.errors import AnsibleError, AnsibleParserError
from ansible.inventory.helpers import get_group_vars
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.unsafe_proxy import wrap_var
from ansible.utils.vars import combine_vars
from ansible.vars.plugins import get_vars_from_inventory_sources
from ansible_collections.kiosk.lxc.plugins.module_utils.common.errors import KioskError
from ansible_collections.kiosk.lxc.plugins.module_utils.domain import manage
from ansible_collections.kiosk.lxc.plugins.module_utils.inventory import guests as guestlib


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    NAME = "kiosk.lxc.guests"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(
            ("guests.kiosk.lxc.yml", "guests.kiosk.lxc.yaml", "kiosk_guests.yml", "kiosk_guests.yaml")
        )

    def _kiosks(self) -> dict:
        """{kiosk name: its variables from the inventory sources read so far}."""
        group = self.inventory.groups.get(self.get_option("kiosk_group"))
        if group is None:
            return {}
        sources = getattr(self.inventory, "processed_sources", [])
        plugins = self.get_option("use_vars_plugins")
        out = {}
        for host in sorted(group.get_hosts(), key=lambda h: h.name):
            groups = host.get_groups()
            hostvars = get_group_vars(groups)
            if plugins:
                hostvars = combine_vars(hostvars, get_vars_from_inventory_sources(self.loader, sources, groups, "all"))
            hostvars = combine_vars(hostvars, host.get_vars())
            if plugins:
                hostvars = combine_vars(hostvars, get_vars_from_inventory_sources(self.loader, sources, [host], "all"))
            out[host.name] = hostvars
        return out

    def _query(self, kiosks: dict) -> dict:
        """{kiosk: [guest facts]} for every kiosk that answered."""
        for lib, err in manage.missing_libs():
            raise AnsibleError(f"The kiosk.lxc.guests inventory needs {lib}: {err}")
        found = {}
        for name, hostvars in kiosks.items():
            with tempfile.TemporaryDirectory(prefix="kiosk-lxc-leases-") as tmp:
                try:
                    found[name] = guestlib.query_kiosk(name, hostvars, self.get_option("leases_dir"), tmp_dir=tmp)
                except KioskError as exc:
                    if self.get_option("unreachable") == "fail":
                        raise AnsibleError(exc.msg) from exc
                    self.display.warning(f"kiosk.lxc.guests: {exc.msg}; its guests are left out")
        return found

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        kiosks = self._kiosks()
        cache_key = self.get_cache_key(path)
        use_cache = self.get_option("cache")
        found = None
        if use_cache and cache:
            try:
                found = self._cache[cache_key]
            except KeyError:
                found = None
        if found is None:
            found = self._query(kiosks)
            if use_cache:
                self._cache[cache_key] = found
        try:
            self._populate(kiosks, found)
        except KioskError as exc:
            raise AnsibleParserError(to_native(exc.msg)) from exc

    def _populate(self, kiosks: dict, found: dict) -> None:
        strict = self.get_option("strict")
        top = self.inventory.add_group(self.get_option("group"))
        for kiosk, guests in found.items():
            hosts = guestlib.guest_hosts(
                kiosk,
                kiosks.get(kiosk, {}),
                guests,
                hostname=self.get_option("hostname"),
                proxy_jump=self.get_option("proxy_jump"),
            )
            for host in hosts:
                name = self.inventory.add_host(host["name"], group=top)
                for key, value in host["vars"].items():
                    # What a guest's definition or its lease holds is data, never a template.
                    self.inventory.set_variable(name, key, wrap_var(value))
                for group in host["groups"]:
                    self.inventory.add_child(self.inventory.add_group(self._sanitize_group_name(group)), name)
                hostvars = self.inventory.get_host(name).get_vars()
                self._set_composite_vars(self.get_option("compose"), hostvars, name, strict=strict)
                self._add_host_to_composed_groups(self.get_option("groups"), hostvars, name, strict=strict)
                self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hostvars, name, strict=strict)
