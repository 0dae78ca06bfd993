# securereg — see README.md. `make test` is the one test command.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c

GO          ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TESTLOG     := $(CURDIR)/.test-output.log
# Suffix shared by every test token (helpers_test.go). It must never show up
# in test output.
TOKEN_MARK  := never-print-me

.PHONY: all test unit vet lint fmt fmt-check tidy-check clean

all: lint test

## test: vet, then every test with the race detector; fail if a test token leaks into the output
test: vet
	$(GO) test -race -count=1 -v ./... 2>&1 | tee $(TESTLOG) | grep -E '^(---|===|ok|FAIL|PASS|panic)' | grep -v '^=== RUN' || true
	@if grep -E '^(--- FAIL|FAIL)' $(TESTLOG) >/dev/null; then echo "tests failed (full log: $(TESTLOG))"; exit 1; fi
	@if ! grep -qE '^ok ' $(TESTLOG); then echo "no test package passed (full log: $(TESTLOG))"; exit 1; fi
	@if grep -q '$(TOKEN_MARK)' $(TESTLOG); then echo "a test token leaked into test output"; exit 1; fi

## unit: quick run without the race detector
unit:
	$(GO) test -count=1 ./...

vet:
	$(GO) vet ./...

## lint: go vet, staticcheck (pinned) and a gofmt check
lint: vet fmt-check
	$(GO) run $(STATICCHECK) ./...

fmt:
	gofmt -w .

fmt-check:
	@out="$$(gofmt -l .)"; if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

clean:
	rm -f $(TESTLOG)
