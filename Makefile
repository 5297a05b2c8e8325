# kiosk.lxc: two commands for a newcomer, `make demo` and `make test`.
# Everything else here is a step of those two. All steps are idempotent.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV    := .venv
BIN     := $(CURDIR)/$(VENV)/bin
BUILD   := $(CURDIR)/build
# The collection seen where Ansible looks for it (a symlink back to this tree)
# and a real copy for ansible-test, which insists on .../ansible_collections/kiosk/lxc.
COLLECTIONS := $(BUILD)/collections
SANITY_DIR  ?= $(BUILD)/sanity/ansible_collections/kiosk/lxc
PYTHON_VERSION := 3.11

export PATH := $(BIN):$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(COLLECTIONS)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
export PYTHONDONTWRITEBYTECODE := 1

# Debian packages: the one list is bindep.txt ("host" = a managed kiosk, "test" = this machine), read by
# the one parser the host role uses too (plain python3: it runs before the venv exists).
BINDEP := python3 plugins/module_utils/common/bindep.py

# ---------------------------------------------------------------- set-up
.PHONY: deps deps-apt
deps: deps-apt $(VENV)/.stamp collection-link

deps-apt:
	@want=$$($(BINDEP) test bindep.txt); missing=""; for p in $$want; do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	else echo "apt: all $$(echo $$want | wc -w) test packages present"; fi

$(VENV)/.stamp: requirements-dev.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt
	touch $@

.PHONY: collection-link
collection-link:
	@mkdir -p $(COLLECTIONS)/ansible_collections/kiosk
	@ln -sfn $(CURDIR) $(COLLECTIONS)/ansible_collections/kiosk/lxc

# ---------------------------------------------------------------- the suite
.PHONY: test checks lint sanity unit integration galaxy
# The static checks and the unit tests run while the kiosk VM image is built
# (or found in its cache) and then the fresh-machine proof runs: both wait
# mostly on the mirror, PyPI and the disk, so on 2 cores they overlap with the
# checks; each one's output is printed when it ends.
# Then the integration tests and the kiosk VM scenario side by side: the VM
# runs in qemu with user networking and touches nothing the integration tests
# use, and each waits mostly on guests booting; each one's output is printed
# when it ends, and a failure of either fails the suite after both ended.
test: deps
	$(MAKE) --no-print-directory -j2 --output-sync=recurse checks vm-image fresh-machine
	$(MAKE) --no-print-directory -j2 --output-sync=recurse integration test-vm-default
	@echo "make test: every step passed"

checks: deps
	@for step in lint sanity galaxy docs unit; do $(MAKE) --no-print-directory $$step; done

lint: deps
	ruff check .
	ruff format --check .
	yamllint -s .
	ansible-lint

# ansible-test wants the checkout at .../ansible_collections/kiosk/lxc: copy
# the files git knows (tracked and new, not ignored) there and run it.
# ansible-test bootstraps pip in its venvs with a script from a host we cannot
# reach; tests/sanity/get_pip_shim.py does that job from ensurepip + PyPI.
sanity: deps
	@pipv=$$(sed -n "s/^ *pip='\([0-9.]*\)',/\1/p" \
	  $(VENV)/lib/python$(PYTHON_VERSION)/site-packages/ansible_test/_internal/python_requirements.py); \
	test -n "$$pipv" || { echo "cannot tell ansible-test's pip version"; exit 1; }; \
	install -D -m 0644 tests/sanity/get_pip_shim.py $(HOME)/.ansible/test/cache/get_pip_$${pipv//./_}.py
	rm -rf $(SANITY_DIR) && mkdir -p $(SANITY_DIR)
	git ls-files -co --exclude-standard -z | xargs -0 tar --ignore-failed-read -cf - 2>/dev/null | tar -xf - -C $(SANITY_DIR)
	cd $(SANITY_DIR) && git init -q && git add -A && \
	  ansible-test sanity --venv --python $(PYTHON_VERSION) --color no $(SANITY_ARGS)

# The collection builds into a tarball that installs, and its modules are found there.
galaxy: deps
	rm -rf $(BUILD)/dist && mkdir -p $(BUILD)/dist
	ansible-galaxy collection build --force --output-path $(BUILD)/dist .
	ansible-galaxy collection install --force -p $(BUILD)/dist/installed $(BUILD)/dist/kiosk-lxc-*.tar.gz
	test -f $(BUILD)/dist/installed/ansible_collections/kiosk/lxc/MANIFEST.json

unit: deps
	pytest -q -p no:cacheprovider tests/unit tests/vm

integration: deps
	pytest -q -p no:cacheprovider -rs tests/integration

# The fresh-machine proof (docs/vm-harness.md): a bare Debian 12 root made by debootstrap (cached),
# this checkout cloned into it with its uncommitted changes, and there, as root in a chroot:
# `make deps`, `make lint`, `make unit`. FRESH_REF=REV proves that commit instead.
.PHONY: fresh-machine
fresh-machine: deps-apt
	python3 tests/fresh/fresh_machine.py $(if $(FRESH_REF),--ref $(FRESH_REF))

# Kiosk VMs (real kernel, systemd, cgroup v2, real ALSA cards) under qemu TCG:
# tests/vm builds and caches the image; the molecule scenarios boot and check them.
.PHONY: test-vm test-vm-default vm-image
# The image molecule `default` boots: the host role's packages preinstalled (docs/vm-harness.md).
vm-image: deps
	tests/vm/kiosk-vm build --host-packages

test-vm-default: deps
	molecule test -s default

test-vm: deps
	molecule test --all

# The docs site in build/docs, failing on any docs error: antsibull-docs lints the plugin and role
# docs and the guides (docs/docsite) and renders them to RST; Sphinx (docs/sphinx/conf.py) builds the
# HTML with every warning an error. The changelog fragments are linted, then released into a throwaway
# copy, so a fragment that does not render fails here rather than at release time.
.PHONY: docs architecture
docs: deps
	python3 docs/architecture.py --check
	antsibull-docs lint-collection-docs --plugin-docs .
	rm -rf $(BUILD)/docs $(BUILD)/docs-src $(BUILD)/changelog && mkdir -p -m 0700 $(BUILD)/docs-src $(BUILD)/changelog
	antsibull-docs collection --use-current --fail-on-error --cleanup everything --dest-dir $(BUILD)/docs-src kiosk.lxc
	cp docs/sphinx/index.rst $(BUILD)/docs-src/
	cp docs/docsite/rst/*.svg $(BUILD)/docs-src/collections/kiosk/lxc/docsite/
	sphinx-build -W --keep-going -q -b html -c docs/sphinx $(BUILD)/docs-src $(BUILD)/docs
	antsibull-changelog lint
	git ls-files -co --exclude-standard -z | xargs -0 tar -cf - | tar -xf - -C $(BUILD)/changelog
	cd $(BUILD)/changelog && antsibull-changelog release --version "$$(sed -n 's/^version: *//p' galaxy.yml)" >/dev/null
	test -s $(BUILD)/changelog/CHANGELOG.rst

# The guide's picture of who imports whom (docs/docsite/rst/architecture.svg), redrawn from the code's imports.
architecture:
	python3 docs/architecture.py

# ---------------------------------------------------------------- the main job
.PHONY: demo
demo: deps
	ansible-playbook -i inventory/demo.yml playbooks/site.yml

.PHONY: clean
clean:
	rm -rf $(BUILD)
