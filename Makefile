# Two commands on a fresh Debian 12 machine: `make lab` and `make test`.
PY := .venv/bin/python
export CI

.PHONY: setup test lab bench fuzz-long clean

setup:
	@bash scripts/setup.sh

test: setup
	$(PY) -m pytest -q

lab: setup
	$(PY) -m lispctl.lab $(if $(KEEP),--keep,) $(if $(TOPO),--topology $(TOPO),)

bench: setup
	mkdir -p build
	$(PY) -m lispctl.bench

fuzz-long: setup
	LISPCTL_FUZZ_EXAMPLES=2000000 $(PY) -m pytest -q -m slow tests

clean:
	rm -rf build .pytest_cache
