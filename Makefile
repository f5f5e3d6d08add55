# explaind: the two commands of the README, and the pieces they use.
#   make demo   set up, build and run the end-to-end demo
#   make test   set up and run the whole test suite (with and without OpenBLAS)

GO ?= go
OUT ?= out/demo

.PHONY: demo test build bench vet setup

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
	@tags=$$(scripts/setup.sh); \
	if [ -n "$$tags" ]; then echo "== go test -tags $$tags ./..."; $(GO) test -tags "$$tags" -count=1 ./... || exit 1; fi; \
	echo "== go test ./... (pure Go)"; $(GO) test -count=1 ./...

bench:
	@tags=$$(scripts/setup.sh); $(GO) test -tags "$$tags" -run XXX -bench . -benchtime 3x ./...
