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
# The tests use the image `make consul-image` builds; consultest's own default
# (hashicorp/consul:1.16.1) is for users who can pull from a registry.
export CONSUL_TEST_IMAGE ?= $(CONSUL_IMAGE)
CONSUL_TEST_BACKEND ?=

.PHONY: all bench bench-smoke demo test check-log integration unit vet lint fmt fmt-check clean consul consul-image image-if-docker

all: lint test

## test: vet, then unit and integration tests with -race against a real Consul; fail if a test token leaks into the output
test: vet consul image-if-docker
	$(GO) test -race -count=1 -v ./... 2>&1 | tee $(TESTLOG) | grep -E '^(---|ok|FAIL|PASS|panic)|consultest: ' | grep -v '^=== RUN' || true
	@$(MAKE) --no-print-directory check-log

# check-log fails on a failed test, on no test run, or on a leaked token, and
# says which Consul backends the integration tests ran on.
check-log:
	@if grep -E '^(--- FAIL|FAIL)' $(TESTLOG) >/dev/null; then echo "tests failed (full log: $(TESTLOG))"; exit 1; fi
	@if ! grep -qE '^ok ' $(TESTLOG); then echo "no test package passed (full log: $(TESTLOG))"; exit 1; fi
	@if grep -q '$(TOKEN_MARK)' $(TESTLOG); then echo "a test token leaked into test output"; exit 1; fi
	@for b in container binary; do n=$$(grep -c "consultest: Consul 1.16.1 ready at .*($$b backend)" $(TESTLOG) || true); \
		echo "integration: $$n Consul 1.16.1 servers started on the $$b backend"; done

## integration: only the real-Consul tests, on CONSUL_TEST_BACKEND (container or binary; empty picks one)
integration: consul image-if-docker
	CONSUL_TEST_BACKEND=$(CONSUL_TEST_BACKEND) $(GO) test -race -count=1 -v -run 'TestIntegration|TestServerIsSecured|TestRestart|TestCheckAgainstConsul|TestGreeter|Example' \
		. ./consultest/ ./cmd/... ./examples/... 2>&1 | tee $(TESTLOG) | grep -E '^(---|ok|FAIL|PASS|panic)|consultest: ' || true
	@$(MAKE) --no-print-directory check-log

## demo: one command for the whole story: a secured Consul, a go-micro greeter, a preflight check, refused attacks
demo: consul
	$(GO) run ./internal/demo

## bench: securereg against the stock plugin and raw consul/api, side by side on one Consul; then the micro-benchmarks
bench: consul
	$(GO) run ./bench
	$(GO) test -run '^$$' -bench 'BenchmarkTokenTransport$$|BenchmarkTokenTransportHTTPTest$$|BenchmarkNew$$|BenchmarkDecode$$|BenchmarkFileToken$$' -benchmem -count 1 .

## bench-smoke: the same, briefly, to show it runs (CI); it asserts no speed
bench-smoke: consul
	$(GO) run ./bench -smoke
	$(GO) test -run '^$$' -bench 'BenchmarkTokenTransport$$|BenchmarkTokenTransportHTTPTest$$|BenchmarkNew$$|BenchmarkDecode$$|BenchmarkFileToken$$' -benchtime 100x .

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

# image-if-docker builds the image only when a Docker engine answers.
image-if-docker:
	@if docker info >/dev/null 2>&1; then $(MAKE) --no-print-directory consul-image; \
	else echo "no Docker engine answers: the container backend is unavailable"; fi

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
