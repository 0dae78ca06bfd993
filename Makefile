# securereg — see README.md. `make test` is the one test command.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -eu -o pipefail -c

GO          ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2
TESTLOG     := $(CURDIR)/.test-output.log
# Suffix shared by every test token (helpers_test.go). It must never show up
# in test output.
TOKEN_MARK  := never-print-me
CONSUL_IMAGE ?= securereg/consul:1.16.1

.PHONY: all test unit vet lint fmt fmt-check clean consul consul-image

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

## consul: build bin/consul (v1.16.1, MPL-2.0) from the tools module, only when missing or outdated
consul: bin/consul

bin/consul: tools/consul/go.mod tools/consul/go.sum
	@mkdir -p bin
	cd tools/consul && CGO_ENABLED=0 $(GO) build -trimpath -o ../../bin/consul github.com/hashicorp/consul
	@./bin/consul version | head -1

## consul-image: import bin/consul as the Docker image securereg/consul:1.16.1 (no registry needed)
consul-image: bin/consul
	@sum="$$(sha256sum bin/consul | cut -c1-64)"; \
	if [ "$$(docker image inspect -f '{{ index .Config.Labels "securereg.consul.sha256" }}' $(CONSUL_IMAGE) 2>/dev/null)" = "$$sum" ]; then \
		echo "$(CONSUL_IMAGE) is up to date"; exit 0; fi; \
	stage="$$(mktemp -d)"; trap 'rm -rf "$$stage"' EXIT; \
	mkdir -p "$$stage/bin" "$$stage/tmp" "$$stage/consul/config" "$$stage/consul/data"; \
	chmod 1777 "$$stage/tmp"; cp bin/consul "$$stage/bin/consul"; \
	tar -C "$$stage" --owner=0 --group=0 --numeric-owner -cf - . | \
		docker import --change 'ENTRYPOINT ["/bin/consul"]' --change "LABEL securereg.consul.sha256=$$sum" - $(CONSUL_IMAGE) >/dev/null; \
	echo "built $(CONSUL_IMAGE)"
