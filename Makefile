# Sluice. `make dev` runs a one-node cluster; `make test` runs every test.
GO        ?= go
BIN       := $(CURDIR)/.bin
BUF_VERSION          := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
CONNECT_GO_VERSION   := v1.21.1
PROMTOOL_VERSION     := v0.316.0

.PHONY: dev test build proto proto-check bench lint tools fuzz powerloss clean grpcurl rules-check check-cc browser redis screenshots

# go-nvml's cgo wrappers call NVML functions that nvml.h marks deprecated; gcc's warnings
# about them are not failures. Flags in our own #cgo lines cannot reach that package's
# compile, so they go here (-O2 -g is Go's default, which CGO_CFLAGS replaces).
export CGO_CFLAGS ?= -O2 -g -Wno-deprecated-declarations

## dev: run a one-node cluster with 4 synthetic GPU executors and the demo policy
dev:
	$(GO) run ./cmd/sluice dev

## test: the alerting rules and dashboard, vet, a build without cgo (NVML off), then every test with the race detector
test: check-cc rules-check browser redis
	$(GO) vet ./...
	CGO_ENABLED=0 $(GO) build ./...
	$(GO) test -race -count=1 -timeout 12m ./...
	# The race detector slows the simulator ~10x, so under -race the queueing-theory checks
	# run on small samples; here they run at full size (millions of jobs) without it.
	$(GO) test -count=1 -timeout 5m -run 'MMcMeanWait|LittlesLaw|Weighted2To1|TokenBucketTenant' ./sim/
	# Latency under thousands of open streams means nothing under the race detector.
	$(GO) test -count=1 -timeout 5m -run 'ThousandsOfWatchers' -v ./node/

## check-cc: the race detector of `make test` needs cgo, so a C compiler
check-cc:
	@cc="$$($(GO) env CC)"; \
	if ! command -v "$${cc%% *}" >/dev/null 2>&1; then \
		echo "make test needs a C compiler for the race detector (cgo): apt-get install -y gcc (CC is \"$$cc\", not found)" >&2; exit 1; \
	elif [ "$$($(GO) env CGO_ENABLED)" != 1 ]; then \
		echo "make test needs cgo for the race detector: CGO_ENABLED is $$($(GO) env CGO_ENABLED); unset it or set CGO_ENABLED=1" >&2; exit 1; \
	fi

## browser: a headless Chromium for the web UI's test (Debian's chromium-headless-shell; apt-get, as root)
BROWSERS := chromium-headless-shell chromium chromium-browser google-chrome
browser:
	@for b in $(BROWSERS); do command -v $$b >/dev/null 2>&1 && exit 0; done; \
	if [ -n "$$SLUICE_SKIP_BROWSER" ]; then echo "no headless Chromium; SLUICE_SKIP_BROWSER is set, so the web UI's browser test is skipped" >&2; exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && apt-get install -y -qq chromium-headless-shell; \
	else \
		echo "make test runs the web UI in a headless Chromium: apt-get install -y chromium-headless-shell (as root), or SLUICE_SKIP_BROWSER=1 to skip that test" >&2; exit 1; \
	fi

## redis: a redis-server for the gateway benchmark's GCRA script test (bench/loadgen; Debian's redis-server; apt-get, as root)
redis:
	@command -v redis-server >/dev/null 2>&1 && exit 0; \
	if [ -n "$$SLUICE_SKIP_REDIS" ]; then echo "no redis-server; SLUICE_SKIP_REDIS is set, so the Redis GCRA script's test is skipped" >&2; exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && apt-get install -y -qq redis-server; \
	else \
		echo "make test runs the Redis GCRA script of bench/gateway.sh against a redis-server: apt-get install -y redis-server (as root), or SLUICE_SKIP_REDIS=1 to skip that test" >&2; exit 1; \
	fi

## screenshots: the web UI's screenshots in docs/ (the browser test, saving them)
screenshots: browser
	SLUICE_SCREENSHOTS=$(CURDIR)/docs $(GO) test -count=1 -run TestWebUIInABrowser ./node/

## build: the sluice binary in bin/
build:
	$(GO) build -o bin/sluice ./cmd/sluice

## tools: the pinned code generators in .bin/
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-connect-go
$(BIN)/buf:
	GOBIN=$(BIN) $(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	GOBIN=$(BIN) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-connect-go:
	GOBIN=$(BIN) $(GO) install connectrpc.com/connect/cmd/protoc-gen-connect-go@$(CONNECT_GO_VERSION)

## rules-check: check the Prometheus rules and config, run the rule tests, check the dashboard's metrics
rules-check: $(BIN)/promtool
	$(BIN)/promtool check rules deploy/prometheus/alerts.yaml
	$(BIN)/promtool test rules deploy/prometheus/alerts_test.yaml
	$(BIN)/promtool check config deploy/prometheus/prometheus.yml
	python3 deploy/check_metrics.py --dashboard-rules $(BIN)/dashboard-rules.yaml
	$(BIN)/promtool check rules $(BIN)/dashboard-rules.yaml

# Prometheus's promtool; a large build, several minutes the first time.
$(BIN)/promtool:
	GOBIN=$(BIN) $(GO) install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

## grpcurl: grpcurl in .bin/, for the README tour
grpcurl: $(BIN)/grpcurl
$(BIN)/grpcurl:
	GOBIN=$(BIN) $(GO) install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3

## proto: lint the .proto files and regenerate proto/gen
proto: tools
	cd proto && $(BIN)/buf lint && rm -rf gen && $(BIN)/buf generate

## proto-check: fail if proto/gen differs from what `make proto` writes
proto-check: proto
	git diff --exit-code -- proto/gen
	test -z "$$(git status --porcelain -- proto/gen)"

## bench: the package benchmarks (numbers recorded in bench/README.md)
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./limiter/ ./scheduler/ ./fsm/

## fuzz: run each fuzz target for FUZZTIME (seed corpora also run in `make test`; CI runs this too).
## Go 1.26's fuzzing coordinator can fail a target with a bare "context deadline exceeded" at the
## end of -fuzztime, having found nothing (go.dev/issue/75804, fixed in Go 1.27): a failure that
## wrote no failing input is run once more; one that wrote an input, or fails twice, fails.
FUZZTIME ?= 30s
FUZZ_TARGETS := node:FuzzValidateSubmit node:FuzzParsePolicy fsm:FuzzApply fsm:FuzzRestore
fuzz:
	@for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t#*:}; dir=$$pkg/testdata/fuzz/$$fn; \
		for try in 1 2; do \
			before=$$(ls $$dir 2>/dev/null | wc -l); \
			echo "fuzz $$fn ./$$pkg/ for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$fn\$$" -fuzztime $(FUZZTIME) ./$$pkg/ && break; \
			if [ "$$(ls $$dir 2>/dev/null | wc -l)" != "$$before" ]; then \
				echo "$$fn found a failing input: it is in $$dir/; commit it as a seed with the fix" >&2; exit 1; fi; \
			if [ $$try = 2 ]; then echo "$$fn failed twice without writing a failing input" >&2; exit 1; fi; \
			echo "$$fn failed without writing a failing input (go.dev/issue/75804): once more" >&2; \
		done; \
	done

## powerloss: cut the power to nodes of a 3-node cluster under load POWERLOSS_ROUNDS times (default 200) per log store, on disks that forget what was not synced
POWERLOSS_ROUNDS ?= 200
powerloss:
	SLUICE_POWERLOSS_ROUNDS=$(POWERLOSS_ROUNDS) $(GO) test -count=1 -timeout 60m -run 'TestPowerLossLosesNoAcknowledgedJob' -v ./node/

## lint: formatting, vet, proto lint
lint: tools
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^proto/gen/'))" || (gofmt -l $$(git ls-files '*.go' | grep -v '^proto/gen/'); exit 1)
	$(GO) vet ./...
	cd proto && $(BIN)/buf lint

clean:
	rm -rf bin .sluice
