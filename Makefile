# The two commands of the README, plus their parts. Everything runs in the git-ignored .comfyui/
# environment that scripts/setup_env.sh creates on first use (a few seconds when it already exists).
PYTHON := .comfyui/venv/bin/python

.PHONY: setup browser demo test lint pytest clean bench bench-quality demo-models

setup:
	bash scripts/setup_env.sh

browser:
	bash scripts/install_browser.sh

demo: setup
	$(PYTHON) scripts/demo.py

test: setup browser lint pytest

# The speed benchmark: real-size models, both attention backends, FLOP-model bound (hours on a 2-core CPU; see
# benchmarks/speed.py for the flags that choose the work; --smoke: a minute).
bench: setup
	$(PYTHON) -m benchmarks.speed

# The quality benchmark on the trained shapes models (about an hour on a 2-core CPU; --quick: a minute).
bench-quality: setup
	$(PYTHON) -m benchmarks.quality

# Retrain the shapes demo models from scratch (resumable; see devkit/shapes/README.md for the times).
demo-models: setup
	bash devkit/shapes/train_all.sh

lint: setup
	$(PYTHON) -m ruff check .

pytest: setup
	$(PYTHON) -m pytest

clean:
	rm -rf .comfyui demo_output test_artifacts
