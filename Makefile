# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
OUT ?= demo_out

.PHONY: venv demo test test-slow bench clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch is pinned to the CPU wheel first so nothing pulls a CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/clv make-data --out $(OUT)/bank --seed 7
	$(BIN)/clv calibrate $(OUT)/bank --calibration-end 2024-06-30 --out $(OUT)/bank_world.json
	$(BIN)/clv validate $(OUT)/bank --calibration-end 2024-06-30 --holdout-end 2024-12-29 --out $(OUT)/bank_validation
	$(BIN)/clv validate --dataset cdnow --calibration-end 1997-09-30 --holdout-end 1998-06-30 --out $(OUT)/cdnow_validation
	$(BIN)/clv simulate $(OUT)/bank_world.json --policy none --customers 100000 --periods 52 --seed 1 --out $(OUT)/simulation.parquet
	$(BIN)/clv evaluate $(OUT)/bank_world.json --policy none --policy bau --policy greedy_uplift --customers 10000 --periods 52 --seeds 3 --out $(OUT)/evaluation
	$(BIN)/clv values $(OUT)/bank_world.json --source sim --horizon 52 --seed 1 --out $(OUT)/values.parquet
	$(BIN)/clv allocate $(OUT)/values.parquet --budget 2000 --capacity channel:rm_call=50 --min-coverage segment:young_digital=0.3 --max-share segment:affluent=0.5 --out $(OUT)/plan.parquet
	$(BIN)/clv frontier $(OUT)/values.parquet --budgets 250,500,1000,2000,4000,8000 --capacity channel:rm_call=50 --min-coverage segment:young_digital=0.3 --plot $(OUT)/frontier.png
	$(BIN)/clv ope $(OUT)/bank --policy greedy_uplift --world $(OUT)/bank_world.json --start 2024-07-01 --estimators dm,ips,snips,dr --out $(OUT)/ope.json
	$(BIN)/clv backtest $(OUT)/bank --split-date 2024-07-01 --policies none,bau,greedy_uplift --world $(OUT)/bank_world.json --out $(OUT)/backtest.json
	$(BIN)/clv scenarios examples/scenario_bank.yaml --out $(OUT)/scenarios
	@echo "demo outputs in $(OUT)/"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_calibration.py
	$(BIN)/python benchmarks/bench_simulator.py
	$(BIN)/python benchmarks/bench_training.py
	$(BIN)/python benchmarks/bench_dp_gap.py
	$(BIN)/python benchmarks/bench_policies.py
	$(BIN)/python benchmarks/bench_allocate.py
	$(BIN)/python benchmarks/bench_ope_truth.py
	$(BIN)/python benchmarks/bench_scenarios.py

clean:
	rm -rf $(VENV) $(OUT) build *.egg-info
