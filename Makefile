# bodycam: the two commands are `make run` and `make test`; everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= run-data
STAMP := $(VENV)/.installed

.PHONY: setup prereqs run test lint unit integration bench faults hil clean

setup: $(STAMP)

# pip's own chatter (build back-end warnings) goes to $(VENV)/setup.log, shown only if it fails.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV): Python packages for bodycam and its tests (about a minute, once)"
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install --quiet --upgrade pip > $(VENV)/setup.log 2>&1 && \
	$(BIN)/pip install --quiet -e '.[test]' >> $(VENV)/setup.log 2>&1 || \
	{ cat $(VENV)/setup.log; echo "setting up $(VENV) failed (log above, also in $(VENV)/setup.log)"; exit 1; }
	@touch $(STAMP)

# The demo exits 130 after a Ctrl-C it handled (it printed where things stand); make is already
# interrupted then, so the recipe passes quietly instead of adding "Error 130".
run: $(STAMP)
	@$(BIN)/python scripts/demo.py --data-dir $(DATA) || [ $$? -eq 130 ]

lint: $(STAMP)
	$(BIN)/ruff check agent hal hq drivers tests scripts
	$(BIN)/mypy agent hal hq drivers

# What the tests need besides .venv (gpsd, shellcheck, systemd's tools, make, python3-venv): checked
# first, so a fresh machine fails naming the apt-get command instead of skipping tests.
prereqs:
	@$(PYTHON) scripts/check-prereqs

test: prereqs lint
	$(BIN)/pytest -q --ignore=tests/hil

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

integration: prereqs $(STAMP)
	$(BIN)/pytest -q tests/integration

bench: $(STAMP)
	@$(BIN)/python scripts/bench.py

# The hardware-in-the-loop suite: the agent started as its systemd unit starts it, on simulated
# sensors, a real gpsd fed through a pty and a real headquarters on loopback.
hil: prereqs $(STAMP)
	BODYCAM_HIL_SUMMARY=hil-summary.txt $(BIN)/pytest -q tests/hil --junitxml=hil-report.xml; \
	status=$$?; cat hil-summary.txt 2>/dev/null; exit $$status

faults: $(STAMP)
	$(BIN)/python scripts/faults.py --trials 25

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache

# ---- installing on a unit (or into a staging tree: DESTDIR) -------------------------------------
# make install DESTDIR=/mnt/rootfs PREFIX=/opt/bodycam
# The package goes into a venv at $(PREFIX)/venv; units, sysusers, tmpfiles and udev rules into the
# system's vendor directories; example configs and docs under $(PREFIX)/share. Run it on the unit
# or in a chroot of its image (pi-gen): the venv is made with the target's own python3.
# INSTALL_PYTHON=/usr/bin/python3 VENV_ARGS=--system-site-packages lets the venv see Raspberry Pi
# OS's python3-picamera2 and python3-libcamera; PIP_EXTRA adds the board's driver libraries
# (gpiod spidev smbus2 sounddevice); PIP_ARGS passes extra pip options (-c constraints.txt).
PREFIX ?= /opt/bodycam
DESTDIR ?=
INSTALL_PYTHON ?= $(PYTHON)
VENV_ARGS ?=
PIP_ARGS ?=
PIP_EXTRA ?=
BINDIR ?= /usr/local/bin
UNITDIR ?= /usr/lib/systemd/system
SYSUSERSDIR ?= /usr/lib/sysusers.d
TMPFILESDIR ?= /usr/lib/tmpfiles.d
UDEVRULESDIR ?= /usr/lib/udev/rules.d
SOURCES := pyproject.toml README.md agent hal hq drivers

.PHONY: install
install:
	@case "$(PREFIX)" in /*) ;; *) echo "PREFIX must be an absolute path" >&2; exit 2;; esac
	set -e; root='$(DESTDIR)'; venv="$$root$(PREFIX)/venv"; \
	src=$$(mktemp -d); trap 'rm -rf "$$src"' EXIT; \
	tar -cf - --exclude=__pycache__ --exclude='*.egg-info' $(SOURCES) | tar -C "$$src" -xf -; \
	$(INSTALL_PYTHON) -m venv --clear $(VENV_ARGS) "$$venv"; \
	"$$venv/bin/python" -m pip install --quiet --no-compile $(PIP_ARGS) "$$src" $(PIP_EXTRA); \
	if [ -n "$$root" ]; then \
		grep -rlI -F -- "$$root$(PREFIX)" "$$venv/bin" "$$venv/pyvenv.cfg" | while read -r f; do \
			sed -i "s|$$root$(PREFIX)|$(PREFIX)|g" "$$f"; done; \
		"$$venv/bin/python" -m compileall -q -f -j0 -s "$$root" -p / "$$venv/lib"; \
	else \
		"$$venv/bin/python" -m compileall -q -f -j0 "$$venv/lib"; \
	fi
	install -d $(DESTDIR)$(UNITDIR) $(DESTDIR)$(SYSUSERSDIR) $(DESTDIR)$(TMPFILESDIR) $(DESTDIR)$(UDEVRULESDIR) \
		$(DESTDIR)$(BINDIR) $(DESTDIR)$(PREFIX)/sbin $(DESTDIR)$(PREFIX)/share/bodycam/configs \
		$(DESTDIR)$(PREFIX)/share/bodycam/systemd $(DESTDIR)$(PREFIX)/share/doc/bodycam
	for f in systemd/bodycam-agent.service systemd/bodycam-console@.service; do \
		sed 's|/opt/bodycam|$(PREFIX)|g' "$$f" > $(DESTDIR)$(UNITDIR)/$${f##*/}; \
		chmod 0644 $(DESTDIR)$(UNITDIR)/$${f##*/}; done
	install -m 0644 systemd/sysusers.d/bodycam.conf $(DESTDIR)$(SYSUSERSDIR)/bodycam.conf
	install -m 0644 systemd/tmpfiles.d/bodycam.conf $(DESTDIR)$(TMPFILESDIR)/bodycam.conf
	install -m 0644 systemd/udev/60-bodycam.rules $(DESTDIR)$(UDEVRULESDIR)/60-bodycam.rules
	install -m 0644 systemd/examples/*.conf $(DESTDIR)$(PREFIX)/share/bodycam/systemd/
	install -m 0644 configs/*.toml $(DESTDIR)$(PREFIX)/share/bodycam/configs/
	install -m 0644 docs/*.md $(DESTDIR)$(PREFIX)/share/doc/bodycam/
	sed 's|/opt/bodycam|$(PREFIX)|g' scripts/provision-unit > $(DESTDIR)$(PREFIX)/sbin/provision-unit
	chmod 0755 $(DESTDIR)$(PREFIX)/sbin/provision-unit
	ln -sfn $(PREFIX)/venv/bin/bodycam $(DESTDIR)$(BINDIR)/bodycam
	@echo "installed bodycam in $(DESTDIR)$(PREFIX); on the unit: systemd-sysusers; systemd-tmpfiles --create;" \
		"udevadm control --reload; systemctl daemon-reload; then $(PREFIX)/sbin/provision-unit (docs/deployment.md)"
