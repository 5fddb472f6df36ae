# Fuzzing (atheris / libFuzzer), see docs/FUZZING.md.
#   make fuzz-seeds                    write fuzz/corpus/<target>/ from valid objects
#   make fuzz                          every target, RUNS executions each (one process at a time, nice 19)
#   make fuzz TARGETS="envelope share" RUNS=100000 MAX_TIME=600
#   make fuzz-smoke                    a few seconds per target (what CI may run)
PYTHON ?= /work/venv/bin/python
RUNS ?= 1000000
MAX_TIME ?= 0
SMOKE_RUNS ?= 300
OUT ?= fuzz/out
ifeq ($(origin TARGETS), undefined)
TARGETS := $(shell $(PYTHON) fuzz/run.py --list 2>/dev/null)
endif

.PHONY: fuzz fuzz-seeds fuzz-smoke native

native:
	$(PYTHON) setup.py -q build_ext --inplace

fuzz-seeds: native
	$(PYTHON) fuzz/seeds.py $(TARGETS)

fuzz: fuzz-seeds
	mkdir -p $(OUT)
	for t in $(TARGETS); do \
	  echo "== $$t"; \
	  nice -n 19 $(PYTHON) fuzz/run.py --target $$t fuzz/corpus/$$t -runs=$(RUNS) -max_total_time=$(MAX_TIME) \
	    -print_final_stats=1 -artifact_prefix=$(OUT)/$$t- > $(OUT)/$$t.log 2>&1; \
	  echo "   exit $$? $$(grep -E 'number_of_executed_units|peak_rss' $(OUT)/$$t.log | tr '\n' ' ')"; \
	done

fuzz-smoke: fuzz-seeds
	mkdir -p $(OUT)
	for t in $(TARGETS); do \
	  $(PYTHON) fuzz/run.py --target $$t fuzz/corpus/$$t -runs=$(SMOKE_RUNS) -artifact_prefix=$(OUT)/$$t- \
	    > $(OUT)/$$t.smoke.log 2>&1 || { echo "$$t FAILED: see $(OUT)/$$t.smoke.log"; exit 1; }; \
	  echo "$$t ok"; \
	done
