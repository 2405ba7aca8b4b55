# Weft: `make run` starts everything on the embedded default; `make test`
# runs the whole suite as CI does.
GO      ?= go
BIN     ?= bin/weft
PKGS    := ./...
# Packages that talk to Redis: run a second time against a real Redis
# server when WEFT_TEST_REDIS_URL names one (CI starts redis-server).
REDIS_PKGS := ./cmd/... ./ingress/... ./persistence/redis/... ./providers/... ./workers/projector/...

.PHONY: all build run test vet fmt-check tidy-check clean bench

all: build

build:
	$(GO) build -o $(BIN) ./cmd/weft

run: build
	./$(BIN) dev

# Load benchmarks against a fresh `weft dev`, beside the raw JetStream rate
# measured in the same run; prints a table. BENCH_FLAGS="-sustain 0" skips
# the 5-minute sustained phase; -hop-per-node compares the engine modes.
bench: build
	$(GO) run ./cmd/weft-bench -weft ./$(BIN) $(BENCH_FLAGS)

vet:
	$(GO) vet $(PKGS)

fmt-check:
	@out=$$(gofmt -l $$(find . -name '*.go' -not -path './.git/*')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

test: fmt-check vet
	env -u WEFT_TEST_REDIS_URL $(GO) test -race -count=1 -timeout 20m $(PKGS)
	@if [ -n "$$WEFT_TEST_REDIS_URL" ]; then \
		echo "== second pass against real Redis at $$WEFT_TEST_REDIS_URL"; \
		$(GO) test -race -count=1 -timeout 10m $(REDIS_PKGS); \
	else \
		echo "== WEFT_TEST_REDIS_URL not set: the real-Redis pass is skipped"; \
	fi

clean:
	rm -rf bin .weft
