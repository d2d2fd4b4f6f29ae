# The two commands of the README, plus their parts. Everything runs in the git-ignored .comfyui/
# environment that scripts/setup_env.sh creates on first use (a few seconds when it already exists).
PYTHON := .comfyui/venv/bin/python
PYTHON33 := .comfyui33/venv/bin/python

.PHONY: setup setup33 browser demo test unit lint pytest pytest33 clean bench bench-quality demo-models

setup:
	bash scripts/setup_env.sh

# The second environment: ComfyUI 0.33.0 from ../shared/comfyui/ComfyUI-0.33.0.tar.gz, in .comfyui33/.
setup33:
	COMFYUI=0.33.0 bash scripts/setup_env.sh

browser:
	bash scripts/install_browser.sh

demo: setup
	$(PYTHON) scripts/demo.py

test: setup setup33 browser lint pytest pytest33

# The speed benchmark: real-size models, both attention backends, FLOP-model bound (hours on a 2-core CPU; see
# benchmarks/speed.py for the flags that choose the work; --smoke: a minute).
bench: setup
	$(PYTHON) -m benchmarks.speed

# The quality benchmark on the trained shapes models (about an hour on a 2-core CPU; --quick: a minute).
bench-quality: setup
	$(PYTHON) -m benchmarks.quality

# Retrain the shapes demo models from scratch (resumable; see devkit/shapes_training/README.md for the times).
demo-models: setup
	bash devkit/shapes_training/train_all.sh

# The unit tier alone (tests/unit: merging/, the config and settings, the steps, heatmap rendering): torch and
# hypothesis only, no ComfyUI imported, about a minute. make test runs it with the rest.
unit: setup
	$(PYTHON) -m pytest tests/unit

lint: setup
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .

pytest: setup
	$(PYTHON) -m pytest

# The suite again on ComfyUI 0.33.0 (version-specific expectations: devkit/__init__.py), less the tests of the
# pack's own tools (marked release_independent), with the robustness matrix pairwise instead of 3-wise.
pytest33: setup33
	TOKENMERGE_ENV_DIR=.comfyui33 $(PYTHON33) -m pytest -m "not release_independent"

clean:
	rm -rf .comfyui .comfyui33 demo_output test_artifacts
