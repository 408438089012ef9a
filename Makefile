# One command per developer loop. Each target installs what it needs first and skips what is already there.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PORT ?= 8787
LOCAL_CLOUDFLARE_PORT ?= 8788
LOCAL_IDENTITY_PORT ?= 8789
LOCAL_STRIPE_PORT ?= 8790
LOCAL_AGENTCORE_CONTROL_PORT ?= 8791
LOCAL_AGENTCORE_DATA_PORT ?= 8792
export PORT LOCAL_CLOUDFLARE_PORT LOCAL_IDENTITY_PORT LOCAL_STRIPE_PORT LOCAL_AGENTCORE_CONTROL_PORT LOCAL_AGENTCORE_DATA_PORT
USER ?= local-user
WORKER_BUILD_VERSION := 0.8.7
# The wasm-bindgen CLI must equal the wasm-bindgen crate in Cargo.lock, or the generated glue will not load.
WASM_BINDGEN_VERSION := $(shell awk '/^name = "wasm-bindgen"$$/{getline; gsub(/"/,"",$$3); print $$3; exit}' Cargo.lock)

CARGO_BIN := $(HOME)/.cargo/bin
export PATH := $(CURDIR)/node_modules/.bin:$(CARGO_BIN):$(PATH)
# worker-build downloads these from GitHub unless told where they are; this machine cannot reach GitHub.
export WASM_BINDGEN_BIN := $(CARGO_BIN)/wasm-bindgen
export WASM_OPT_BIN := $(CURDIR)/node_modules/.bin/wasm-opt
export ESBUILD_BIN := $(CURDIR)/node_modules/@esbuild/linux-x64/bin/esbuild

export WRANGLER_SEND_METRICS := false
WRANGLER := npx --no-install wrangler

# A recipe that fails leaves no half-made target behind (a later build would take it as up to date).
.DELETE_ON_ERROR:

.PHONY: help setup build dev test test-native test-workerd lint token admin-token reset deploy-check bench smoke-cloudflare

help:
	@echo "make dev      run the local stack and its dashboard on http://127.0.0.1:$(PORT) (PORT=… to change)"
	@echo "make test     run every test (lint, native, workerd)"
	@echo "make token USER=<subject>   print a bearer token the local stack accepts"
	@echo "make admin-token             print the local stack's operator token (for /v1/admin/…)"
	@echo "make bench                   gateway vs direct latency, throughput and SSE time-to-first-delta"
	@echo "make lint     cargo fmt --check and clippy -D warnings"
	@echo "make reset    wipe local D1 and Durable Object state"
	@echo "make deploy-check   wrangler deploy --dry-run"

## Installs ---------------------------------------------------------------------------------------------------

setup: .make/rust-tools node_modules/.package-lock.json

# The dashboard's browser tests drive Debian's Chromium (browser downloads fail on these machines).
CHROMIUM ?= /usr/bin/chromium
export CHROMIUM_PATH := $(CHROMIUM)
$(CHROMIUM):
	@echo "Installing Debian's chromium for the dashboard's browser tests…"
	@if [ "$$(id -u)" = 0 ]; then apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; \
	  else sudo -n apt-get update -q >/dev/null && sudo -n apt-get install -y -q chromium >/dev/null; fi

# A marker per tool version: bumping a version in this file reinstalls, a second run skips.
.make/rust-tools: .make/worker-build-$(WORKER_BUILD_VERSION) .make/wasm-bindgen-$(WASM_BINDGEN_VERSION)
	@rustup target add wasm32-unknown-unknown >/dev/null
	@rustup component add rustfmt clippy >/dev/null 2>&1 || true
	@touch $@

.make/worker-build-%:
	@mkdir -p .make
	@if [ "$$(worker-build --version 2>/dev/null)" != "$*" ]; then cargo install worker-build --version $* --force; fi
	@touch $@

# No --locked: the registry lacks one dependency version pinned in the CLI's lock file.
.make/wasm-bindgen-%:
	@mkdir -p .make
	@if ! wasm-bindgen --version 2>/dev/null | grep -qx "wasm-bindgen $*"; then cargo install wasm-bindgen-cli --version $* --force; fi
	@touch $@

# npm's output goes to stderr so that `make token` prints only the token, even on a first run.
node_modules/.package-lock.json: package.json package-lock.json
	@npm ci --no-audit --no-fund --loglevel=error >&2
	@touch $@

## Build ------------------------------------------------------------------------------------------------------

# worker-build keeps the Wasm name section (function names in stack traces): ~155 KB raw, ~40 KB gzip. Panics
# are still logged with their message and source location, so it is stripped. The feature flags are the ones
# worker-build passes to wasm-opt, so nothing newer than workerd supports is emitted.
WASM_FEATURES := mutable-globals sign-ext nontrapping-float-to-int bulk-memory multivalue reference-types exception-handling

# Rebuilt only when a source changed: `wrangler dev` runs `make build` itself on start, and rewriting the Wasm
# under a running test suite (or a running `make dev`) would hand workerd a half-written module. The optimised
# module replaces the old one in one rename for the same reason.
WORKER_SOURCES := $(shell find src durable_objects -name '*.rs' -o -name '*.mjs') Cargo.toml Cargo.lock $(wildcard worker-template/*.js)

build: setup build/index_bg.wasm dashboard/dist/index.html target/debug/webhost
	@printf 'build/index_bg.wasm: %s bytes raw, %s gzip\n' "$$(wc -c < build/index_bg.wasm)" "$$(gzip -9 -c build/index_bg.wasm | wc -c)"
	@printf 'dashboard JavaScript: %s bytes gzip (budget 150 KB)\n' "$$(cat dashboard/dist/assets/*.js | gzip -9 | wc -c)"

build/index_bg.wasm: $(WORKER_SOURCES)
	worker-build --release
	wasm-opt build/index_bg.wasm --strip-debug --strip-producers $(addprefix --enable-,$(WASM_FEATURES)) -o build/index_bg.wasm.tmp
	mv build/index_bg.wasm.tmp build/index_bg.wasm

# The dashboard (Vite + Preact + TypeScript) as static files, served by the control plane ([assets] in
# wrangler.toml). Rebuilt only when its sources change, for the same reason as the Wasm.
# DASHBOARD_SCRIPT_ORIGINS narrows the dashboard's Content-Security-Policy to your identity provider (see
# dashboard/vite.config.mjs); a change of it rebuilds the dashboard.
DASHBOARD_SOURCES := $(shell find dashboard/src -type f) dashboard/index.html dashboard/vite.config.mjs dashboard/tsconfig.json
export DASHBOARD_SCRIPT_ORIGINS

.make/dashboard-script-origins: FORCE
	@mkdir -p .make
	@printf '%s\n' "$$DASHBOARD_SCRIPT_ORIGINS" | cmp -s - $@ || printf '%s\n' "$$DASHBOARD_SCRIPT_ORIGINS" > $@

.PHONY: FORCE
FORCE:

dashboard/dist/index.html: node_modules/.package-lock.json $(DASHBOARD_SOURCES) .make/dashboard-script-origins
	vite build --config dashboard/vite.config.mjs --logLevel warn

# The `webhost` CLI (cli/, a workspace member), for this machine.
target/debug/webhost: $(shell find cli/src -name '*.rs') cli/Cargo.toml Cargo.lock
	cargo build -q -p webhost-cli

## Local stack ------------------------------------------------------------------------------------------------

.dev.vars: node_modules/.package-lock.json scripts/dev-keys.mjs scripts/dev-identity.mjs
	@node scripts/dev-keys.mjs

# The control plane under wrangler dev, and the local Cloudflare it deploys agents to, side by side; stopping
# `make dev` stops both.
dev: setup .dev.vars
	@node scripts/dev-keys.mjs
	$(WRANGLER) d1 migrations apply DB --local
	@echo
	@echo "  Control plane:    http://127.0.0.1:$(PORT)   (state in .wrangler/; 'make reset' wipes it)"
	@echo "  Dashboard:        http://127.0.0.1:$(PORT)/   (sign in with any user name)"
	@echo "  Local Cloudflare: http://127.0.0.1:$(LOCAL_CLOUDFLARE_PORT)/client/v4 (deployed agents at /__workers/<script>)"
	@echo "  Local identity:   http://127.0.0.1:$(LOCAL_IDENTITY_PORT)/sign-in (Clerk stand-in; keys at /.well-known/jwks.json)"
	@echo "  Local Stripe:     http://127.0.0.1:$(LOCAL_STRIPE_PORT)/v1 (checkout pages, signed webhooks to /v1/billing/webhook)"
	@echo "  Local AgentCore:  http://127.0.0.1:$(LOCAL_AGENTCORE_CONTROL_PORT) (control API), :$(LOCAL_AGENTCORE_DATA_PORT) (invocations); SigV4-checked"
	@echo "  A token:          TOKEN=\$$(make -s token USER=alice)"
	@echo "  Try:              curl -H \"Authorization: Bearer \$$TOKEN\" http://127.0.0.1:$(PORT)/v1/me"
	@echo "  Operator token:   make -s admin-token"
	@echo "  CLI:              make -s token USER=alice | target/debug/webhost login --endpoint http://127.0.0.1:$(PORT)"
	@echo "                    target/debug/webhost deploy examples/wasm-agent && target/debug/webhost invoke wasm-agent hi"
	@echo
	@node local-cloudflare/server.mjs & lcf=$$!; node local-identity/server.mjs & idp=$$!; \
	  node local-stripe/server.mjs & stripe=$$!; node local-agentcore/server.mjs & agentcore=$$!; \
	  trap 'kill $$lcf $$idp $$stripe $$agentcore 2>/dev/null' EXIT INT TERM; \
	  $(WRANGLER) dev --local --ip 127.0.0.1 --port $(PORT)

token: .dev.vars
	@node scripts/token.mjs "$(USER)"

admin-token: .dev.vars
	@cat .dev/admin-token

reset:
	rm -rf .wrangler/state .wrangler/local-cloudflare
	@echo "Local D1, Durable Object and local Cloudflare state wiped."

# The gateway against calling the same agent directly, on the local stack; writes docs/benchmarks.md.
bench: build
	node scripts/bench.mjs

# One real deploy, invoke, rollback and clean-up against a Cloudflare account (skipped without
# CLOUDFLARE_API_TOKEN and CLOUDFLARE_ACCOUNT_ID); see README › Deploying to Cloudflare. Not part of `make test`.
smoke-cloudflare: build
	node scripts/smoke-cloudflare.mjs

## Checks -----------------------------------------------------------------------------------------------------

lint: setup
	tsc -p dashboard
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy -p webhost-cli --all-targets -- -D warnings
	cargo clippy --target wasm32-unknown-unknown -- -D warnings

test-native:
	cargo test --workspace

test-workerd: build $(CHROMIUM)
	node --test --test-concurrency=2 --test-timeout=180000 --test-force-exit "tests/**/*.test.mjs"

test: setup lint test-native test-workerd deploy-check

deploy-check: build
	$(WRANGLER) deploy --dry-run --outdir .make/dry-run
