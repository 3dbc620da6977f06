# depthmine: two commands on a fresh machine.
#   make demo   set up .venv and run the main job on embedded defaults
#   make test   set up .venv and run the test suite
#   make test-fast   the inner loop: the suite without the tests marked slow
#   make lint   ruff: lint and format check (what CI runs before the tests)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.depthmine-installed
OPENCV := opencv-contrib-python==4.13.0.92
DEMO_OUT ?= demo_out

export PREFECT_SERVER_ANALYTICS_ENABLED = false
export PREFECT_UI_ENABLED = false

.PHONY: setup demo test test-fast lint bench clean

setup: $(STAMP)

# The install is deterministic: torch/torchvision pins first (local wheels), then the
# project, then opencv-python (pulled by scenedetect and ptlflow) is replaced by
# opencv-contrib-python, so cv2.optflow and cv2.ximgproc always import.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q -e '.[test,export]'
	$(BIN)/python -m pip uninstall -q -y opencv-python opencv-python-headless opencv-contrib-python-headless || true
	$(BIN)/python -m pip install -q --no-deps --force-reinstall $(OPENCV)
	$(BIN)/python -c "import cv2; cv2.optflow; cv2.ximgproc"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/depthmine demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(DEMO_OUT) .pytest_cache
