# Entry points of the project. Every target sets up what it needs first:
# a virtualenv in .venv and, when run as root, the Debian packages.
PYTHON ?= python3
# A value as one shell word, whatever it holds: `arg` takes a variable's name, so the shell never
# parses what a variable holds (make deploy "BOARD=x;touch y" passes one odd board name, which hwflow
# refuses, and make fails). `opt` adds the flag only when the variable is set. Every variable a user
# may set reaches a recipe through these.
shellword = '$(subst ','\'',$(1))'
arg = $(call shellword,$($(1)))
opt = $(if $($(1)),$(2) $(call arg,$(1)))
need = $(if $($(1)),,$(error make $@ needs $(1)=$(2)))
VENV   := .venv
BIN    := $(VENV)/bin
# The board image and its rules (numpy only, Python 3.8, never torch, nothing outside
# the image): pyproject.toml [tool.board-image], checked by scripts/check_board_side.py.
TEST_EXTRAS ?= dev,device,coordinator,train,scale
# torch's CPU build on purpose (PyPI's is the CUDA build): PyTorch's CPU wheel index, used when it
# answers (scripts/torch-index.sh); the install says which build it got.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
# mosquitto: MQTT tests; verilator, g++, make: the RTL co-simulation; the rest: hwflow's tests (Yosys, a fake Vivado in tclsh, rootless
# disk images, a loopback sshd, rsync deploys).
TEST_DEBS   := mosquitto verilator g++ make yosys tcl mtools e2fsprogs openssh-server openssh-client rsync chromium libdeflate0
DATA_DEBS   := dataset-fashion-mnist

.PHONY: help setup setup-demo bench-setup test lint fuzz bench-codecs fl bench-fl bench-fl-full bench-sim bench-scale study backbone bench-fewshot dse demo bench-demo testbed broker bench-coordinator bench-tensil bench-board compile rtl rtl-report bitstream sdcard flash deploy bench-hwflow clean

help:
	@echo "make test          set up .venv and run lint + the test suite (< 10 min on 2 cores)"
	@echo "make lint          ruff; the board image: Python 3.8 (grammar + vermin), no torch, nothing outside the image; mypy on the board packages and tensil_tools"
	@echo "make fuzz          the structure-aware fuzzers (messages; .tarch/.tmodel/.hwh; chunk headers) for FUZZ_SECONDS each (default 300; make test runs 3 s)"
	@echo "make bench-codecs  compression codecs on a real trained Fashion-MNIST MLP"
	@echo "make fl            one federated simulation (CONFIG=configs/fl/fmnist_headline.toml)"
	@echo "make bench-fl      the federated compression reproductions, quick mode (minutes)"
	@echo "make bench-fl-full the three studies in their full settings (hours; STUDIES=1,2,3)"
	@echo "make bench-sim     the simulation's engines side by side (sequential, batched, vmap): seconds a round"
	@echo "make bench-scale   1,000 simulated clients on our engine and on Flower's (Ray): seconds a round, peak memory"
	@echo "make study         one seed's study by name: its table and plot (STUDY=name [SEEDS=3] [ROUNDS=] [JOBS=]; STUDY=list)"
	@echo "make backbone      train + export the bundled few-shot backbone (CIFAR-10 base classes)"
	@echo "make bench-fewshot few-shot accuracy of the backbones (Omniglot, CIFAR-10 novel)"
	@echo "make dse           design-space table of the backbone family (quick mode)"
	@echo "make demo          the camera demonstrator (a headless replay run when no camera/display); installs the demo extra only"
	@echo "make bench-setup   make demo's install on a fresh virtualenv in a temporary folder: seconds and MB against its targets"
	@echo "make bench-demo    demonstrator FPS, per-stage latency and accuracy, headless"
	@echo "make testbed       broker + coordinator + 10 devices over MQTT on Fashion-MNIST; live table, JSON report + PNG"
	@echo "make broker        Mosquitto with passwords + per-device ACL, loopback only (BROKER_HOST=0.0.0.0, BROKER_TLS=1; brokers/)"
	@echo "make bench-coordinator  coordinator cost against the number of clients; round overhead on loopback"
	@echo "make bench-tensil  Tensil: emulator MAC/s vs the reference, RTL co-simulation build time and cycles/s,"
	@echo "                   estimate vs RTL cycles, emulator = RTL sweep (SWEEP=N), the compiled backbone: accuracy, RTL cycles, compile time"
	@echo "make compile       compile the bundled backbone for both .tarch files into models/ (TENSIL=docker: Tensil's own compiler;"
	@echo "                   CLOCK_MHZ=125: for a TCU at that clock, default 50 as shipped)"
	@echo "make rtl           Tensil RTL for ARCH= via docker tensilai/tensil (or check TENSIL_RTL=dir)"
	@echo "make rtl-report    Yosys resource estimate of the RTL vs the XC7Z020 (TENSIL_RTL=, default ../shared)"
	@echo "make bitstream     PYNQ-Z1 overlay: Vivado batch (ARCH= CLOCK_MHZ=125 PYNQ_DIR= [ALLOW_NEGATIVE_SLACK=1])"
	@echo "make sdcard        our stack into a copy of a PYNQ-Z1 image, rootless (IMAGE= OUT=board.img BOARD_ID= WHEELS= IMAGE_SHA256=)"
	@echo "make flash         write OUT= to an SD card (DEVICE=/dev/sdX [YES=1]), read back and compared"
	@echo "make deploy        the same payload over SSH to a running board, then its doctor (BOARD=xilinx@pynq-01)"
	@echo "make bench-hwflow  SD image build time/size on a synthetic PYNQ image; deploy time over loopback SSH"
	@echo "make bench-board   backends on the demo (onnxruntime, opencv, tensil-emu), the driver's host cost, RTL cycles: projected board FPS"
	@echo "make clean         remove .venv and caches"

$(VENV)/.installed-$(TEST_EXTRAS): pyproject.toml
	$(call arg,PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e $(call shellword,.[$(TEST_EXTRAS)]) \
		$$(scripts/torch-index.sh $(call arg,TORCH_INDEX) $(BIN)/python)
	@$(BIN)/python -c "import torch; print('installed torch', torch.__version__, '(CUDA %s build)' % torch.version.cuda if torch.version.cuda else '(CPU build)')" 2>/dev/null || true
	touch $@

setup: $(VENV)/.installed-$(TEST_EXTRAS)
	@scripts/system-deps.sh $(TEST_DEBS)

# `make demo` installs the demonstrator's extra only (no torch, no Debian packages), with pip's progress.
$(VENV)/.installed-demo: pyproject.toml
	$(call arg,PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[demo]'
	touch $@

setup-demo: $(VENV)/.installed-demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/python scripts/check_board_side.py
	$(BIN)/python -m mypy

test: lint
	$(BIN)/python -m pytest

FUZZ_SECONDS ?= 300
fuzz: setup
	FEDCORE_FUZZ_SECONDS=$(call arg,FUZZ_SECONDS) $(BIN)/python -m pytest tests/test_container_fuzz.py -q -s -k structure_aware
	FEDCORE_FUZZ_SECONDS=$(call arg,FUZZ_SECONDS) $(BIN)/python -m pytest tests/test_tensil_fuzz.py -q -s
	FEDCORE_FUZZ_SECONDS=$(call arg,FUZZ_SECONDS) $(BIN)/python -m pytest tests/test_chunks.py -q -s -k structure_aware

bench-codecs: setup
	@scripts/system-deps.sh $(DATA_DEBS) libdeflate0
	$(BIN)/python -m benchmarks.codecs

CONFIG ?= configs/fl/fmnist_headline.toml
fl: setup
	@scripts/system-deps.sh $(DATA_DEBS)
	$(BIN)/python -m training.fl --config $(call arg,CONFIG)

bench-fl: setup
	@scripts/system-deps.sh $(DATA_DEBS)
	$(BIN)/python -m benchmarks.fl --quick

# STUDIES=1 (FMNIST, ~1.5 h), 2 (SimpleCNN pruning, ~40 min), 3 (CIFAR-10 FLoCoRA, ~1.5 h) on 2 cores.
STUDIES ?= 1,2,3
bench-fl-full: setup
	@scripts/system-deps.sh $(DATA_DEBS)
	$(BIN)/python -m benchmarks.fl --full --only $(call arg,STUDIES)

bench-sim: setup
	@scripts/system-deps.sh $(DATA_DEBS)
	$(BIN)/python -m benchmarks.sim

bench-scale: setup
	@scripts/system-deps.sh $(DATA_DEBS)
	$(BIN)/python -m benchmarks.scale

# configs/fl/studies/$(STUDY).toml; the table and plot go to docs/studies/$(STUDY)/ (runs/ for ROUNDS=).
STUDY ?= list
study: setup
	@scripts/system-deps.sh $(DATA_DEBS)
	$(BIN)/python -m training.fl.study $(call arg,STUDY) $(call opt,SEEDS,--seeds) $(call opt,ROUNDS,--rounds) \
	    $(call opt,JOBS,--jobs)

# The command recorded in models/resnet9_f16_strided_32.json.
backbone: setup
	$(BIN)/python -m training.fewshot train --data cifar10 --epochs 10 --cycle-epochs 2 --peak-decay 0.8 --threads 2 --out runs/fewshot/cifar
	$(BIN)/python -m training.fewshot export --backbone runs/fewshot/cifar/resnet9_f16_strided_32_cifar10_s0.pt --data cifar10 --out models

bench-fewshot: setup
	$(BIN)/python -m benchmarks.fewshot

dse: setup
	$(BIN)/python -m benchmarks.dse --quick

demo: setup-demo
	$(BIN)/python -m demo_app --demo --out-dir runs/demo --video runs/demo/demo.mp4

bench-demo: setup
	$(BIN)/python -m benchmarks.demo

bench-setup:
	$(call arg,PYTHON) -m benchmarks.setup_demo

testbed: setup
	@scripts/system-deps.sh $(DATA_DEBS)
	$(BIN)/python -m coordinator.testbed --config configs/testbed/fmnist_mlp128.toml

broker: setup
	@scripts/system-deps.sh mosquitto
	brokers/run_mosquitto.sh

bench-coordinator: setup
	@scripts/system-deps.sh $(DATA_DEBS) mosquitto
	$(BIN)/python -m benchmarks.coordinator

SWEEP ?= 100
bench-tensil: setup
	$(BIN)/python -m benchmarks.tensil --sweep $(call arg,SWEEP)

# From a checkpoint to a board (python -m hwflow; docs/hardware.md).
ARCH      ?= tensil_arch/pynqz1_perf.tarch
CLOCK_MHZ ?= 125
OUT       ?= board.img
HWFLOW    := $(BIN)/python -m hwflow
PAYLOAD   = $(call opt,BOARD_ID,--board-id) $(call opt,BOARD_CONFIG,--config) $(call opt,WHEELS,--wheels) \
            $(if $(NO_WHEELS),--no-wheels) $(if $(FL),--fl)

rtl: setup
	$(HWFLOW) rtl --arch $(call arg,ARCH) $(call opt,TENSIL_RTL,--rtl)

rtl-report: setup
	@scripts/system-deps.sh yosys
	$(HWFLOW) rtl-report $(call opt,TENSIL_RTL,--rtl) --json build/rtl-report.json

bitstream: setup
	$(HWFLOW) bitstream --arch $(call arg,ARCH) --clock-mhz $(call arg,CLOCK_MHZ) $(call opt,PYNQ_DIR,--pynq-dir) \
	    $(call opt,TENSIL_RTL,--rtl) $(if $(ALLOW_NEGATIVE_SLACK),--allow-negative-slack)

sdcard: setup
	@scripts/system-deps.sh mtools e2fsprogs
	$(call need,IMAGE,<the official PYNQ-Z1 .img>)
	$(HWFLOW) sdcard --image $(call arg,IMAGE) --out $(call arg,OUT) $(if $(FORCE),--force) \
	    $(if $(IMAGE_SHA256),--image-sha256 $(call arg,IMAGE_SHA256)) $(PAYLOAD)

flash: setup
	$(call need,DEVICE,/dev/sdX (the SD card's whole disk))
	$(HWFLOW) flash --image $(call arg,OUT) --device $(call arg,DEVICE) $(if $(YES),--yes) $(if $(FORCE),--force)

deploy: setup
	@scripts/system-deps.sh openssh-client
	$(call need,BOARD,user@host (e.g. xilinx@pynq-01))
	$(HWFLOW) deploy --board $(call arg,BOARD) $(PAYLOAD)

bench-hwflow: setup
	$(BIN)/python -m benchmarks.hwflow

bench-board: setup
	$(BIN)/python -m benchmarks.board

# The bundled backbone for both architectures, beside its ONNX (a board runs without compiling).
# TENSIL=docker runs Tensil's own compiler (tensilai/tensil image) into runs/tensil-docker/.
TENSIL ?= python
BACKBONE_ONNX := models/resnet9_f16_strided_32.onnx
ARCHS := tensil_arch/pynqz1_perf.tarch tensil_arch/pynqz1.tarch
# the TCU clock the programs are made for: the compiler's default (50 MHz, as shipped) unless
# CLOCK_MHZ is given on the command line or in the environment (not make bitstream's default below)
COMPILE_CLOCK = $(if $(and $(filter command line environment,$(origin CLOCK_MHZ)),$(CLOCK_MHZ)),--clock-mhz $(call arg,CLOCK_MHZ))
compile: setup
ifeq ($(TENSIL),docker)
	@for arch in $(foreach a,$(ARCHS),$(call shellword,$(a))); do \
	    scripts/tensil_docker_compile.sh $(call arg,BACKBONE_ONNX) "$$arch" runs/tensil-docker || exit $$?; done
else
	@for arch in $(foreach a,$(ARCHS),$(call shellword,$(a))); do \
	    $(BIN)/python -m tensil_tools compile $(call arg,BACKBONE_ONNX) --arch "$$arch" --out models --quiet $(COMPILE_CLOCK) || exit $$?; done
endif

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .ruff_cache build/cosim
