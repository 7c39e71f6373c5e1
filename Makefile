# FastGate: the two set-up commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
CONFIGURATION ?= Release
DOTNET ?= dotnet
export DOTNET_CLI_TELEMETRY_OPTOUT := 1
export DOTNET_NOLOGO := 1
export DOTNET_SKIP_FIRST_TIME_EXPERIENCE := 1

SERVER_DLL := src/FastGate.Server/bin/$(CONFIGURATION)/net10.0/fastgate.dll
DEMO_DLL := src/FastGate.DemoUpstream/bin/$(CONFIGURATION)/net10.0/FastGate.DemoUpstream.dll

.PHONY: all build test run publish bench compare load deps clean

all: build

build:
	$(DOTNET) build FastGate.sln -c $(CONFIGURATION)

# Installs what the tests need when it is missing, then runs every test.
test:
	bash tests/install-deps.sh
	bash tests/run-tests.sh $(CONFIGURATION)

# The gateway on config/fastgate.json (127.0.0.1:8080) in front of the demo upstream (127.0.0.1:9001).
run:
	$(DOTNET) build src/FastGate.Server/FastGate.Server.csproj -c $(CONFIGURATION)
	$(DOTNET) build src/FastGate.DemoUpstream/FastGate.DemoUpstream.csproj -c $(CONFIGURATION)
	bash config/run-demo.sh "$(DOTNET)" "$(SERVER_DLL)" "$(DEMO_DLL)"

# Native AOT binary for Linux and a self-contained single file for Windows, in artifacts/.
publish:
	bash perf/publish.sh

bench:
	bash perf/bench.sh

compare:
	bash perf/compare.sh

load:
	bash perf/load.sh

clean:
	$(DOTNET) clean FastGate.sln -c $(CONFIGURATION)
	rm -rf artifacts
