# Copyright: kiosk.lxc contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sphinx configuration of the kiosk.lxc docs site, built by `make docs` into build/docs.

antsibull-docs renders the collection (modules, the inventory plugin, the filter,
the roles' argument_specs and the guides in docs/docsite/rst) into RST; Sphinx
builds it with every warning an error. The build is offline (the machines it
runs on reach no documentation hosts), so there is no intersphinx: the references
into docs.ansible.com that antsibull-docs writes into every plugin page are
left as plain text (nitpick_ignore*), and any other unresolved reference
fails the build.
"""

from __future__ import annotations

project = "kiosk.lxc"
copyright = "kiosk.lxc contributors"
title = "kiosk.lxc documentation"
html_short_title = "kiosk.lxc"
extensions = ["sphinx_antsibull_ext"]
pygments_style = "ansible"
highlight_language = "YAML+Jinja"
html_theme = "sphinx_ansible_theme"
html_show_sphinx = False
html_use_smartypants = True
html_use_modindex = False
html_use_index = False
html_copy_source = False
default_role = "any"
nitpicky = True

# Targets in docs.ansible.com (labels, ansible.builtin plugin pages, ANSIBLE_* settings)
# are not warned about; nitpick_ignore is the one switch Sphinx honours for :ref:.
nitpick_ignore = [("std:ref", "common_return_values"), ("std:ref", "ansible_configuration_settings")]
nitpick_ignore_regex = [
    ("std:ref", r"ansible_collections\.ansible\.builtin\..*"),
    ("std:envvar", r"ANSIBLE_[A-Z0-9_]+"),
]
