# The two commands of the README: `make serve` and `make test`. Everything else is a helper for them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= ./dopamine-data
# Debian packages the test suite drives (DCMTK clients, dciodvfy, a real slapd, openssl for its certificates).
TEST_DEBS := dcmtk dicom3tools slapd ldap-utils openssl
# The reference archive the benchmarks compare against.
BENCH_DEBS := orthanc orthanc-dicomweb

.PHONY: serve test venv system-test-deps bench clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,codecs]'
	touch $@

venv: $(BIN)/.installed

serve: venv
	$(BIN)/dopamine serve --data-dir $(DATA)

# Installs the Debian packages the tests drive when run as root and they are missing;
# as a normal user it only says what is missing (the tests then fail loudly, naming the tool).
system-test-deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "WARNING: missing Debian packages (run as root or install them):$$missing"; fi; \
	fi

test: venv system-test-deps
	$(BIN)/python -m pytest -p no:cacheprovider $(PYTEST_ARGS)

bench: venv
	@if [ "$$(id -u)" = 0 ]; then dpkg -s $(BENCH_DEBS) >/dev/null 2>&1 || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_DEBS) >/dev/null); fi
	$(BIN)/python benchmarks/ingest_dimse.py

clean:
	rm -rf $(VENV) build *.egg-info
