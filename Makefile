.PHONY: test run build

VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null)
LDFLAGS  := -s -w -X main.version=$(VERSION) -X main.revision=$(REVISION)

# Run every test against a real Docker Engine (started if none answers).
test:
	./scripts/test.sh

# Build hookd and run it against the local Docker Engine.
run: build
	./scripts/run.sh

build:
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o bin/hookd ./cmd/hookd
