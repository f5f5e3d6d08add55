# explaind: the two commands of the README, and the pieces they use.
#   make demo   set up, build and run the end-to-end demo
#   make test   set up and run the whole test suite (with and without OpenBLAS),
#               the race detector over the packages that run goroutines, and,
#               when CI is set, a bounded fuzzing of every fuzz target

GO ?= go
OUT ?= out/demo

# The packages whose code runs goroutines, for the race detector, and the
# time each fuzz target gets in `make fuzz`.
RACE_PKGS ?= ./gemm/... ./nn/... ./internal/parallel/... ./explain/... ./epk/... ./history/... ./train/...
FUZZTIME ?= 8s

.PHONY: demo test build bench vet setup race fuzz

setup:
	@scripts/setup.sh >/dev/null

build:
	@tags=$$(scripts/setup.sh); echo "building explaind (tags: $${tags:-none})"; \
	$(GO) build -tags "$$tags" -o bin/explaind ./cmd/explaind

demo: build
	bin/explaind demo --out $(OUT)

vet:
	$(GO) vet ./...
	@tags=$$(scripts/setup.sh); [ -z "$$tags" ] || $(GO) vet -tags "$$tags" ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt would change:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

test: vet
	@tags=$$(scripts/setup.sh test); \
	if [ -n "$$tags" ]; then echo "== go test -tags $$tags ./..."; $(GO) test -tags "$$tags" -count=1 ./... || exit 1; fi; \
	echo "== go test ./... (pure Go)"; $(GO) test -count=1 ./...
	@$(MAKE) --no-print-directory race
	@if [ -n "$$CI" ]; then $(MAKE) --no-print-directory fuzz; fi

# race runs the tests of RACE_PKGS under the race detector; -short skips
# the tests too slow for it (each says so).
race:
	@tags=$$(scripts/setup.sh); echo "== go test -race -short $${tags:+-tags $$tags} (packages that run goroutines)"; \
	$(GO) test -race -short -tags "$$tags" -count=1 $(RACE_PKGS)

# fuzz fuzzes every fuzz target for FUZZTIME each (scripts/fuzz.sh); plain
# go test already replays their corpora.
fuzz:
	@echo "== scripts/fuzz.sh $(FUZZTIME)"; scripts/fuzz.sh $(FUZZTIME)

bench:
	@tags=$$(scripts/setup.sh); $(GO) test -tags "$$tags" -run XXX -bench . -benchtime 3x ./...
