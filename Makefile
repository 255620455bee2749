# kubepam developer front door. `make help` lists the targets.
SHELL := bash
.DEFAULT_GOAL := help
DEV := $(CURDIR)/.dev
KUBECONFIG_DEV := $(DEV)/kubeconfig
KUBECTL = $(shell hack/build-controlplane.sh)/kubectl
# Where the local API server reaches kubepam's admission webhooks under `make run`.
WEBHOOK_PORT ?= 18443

.PHONY: help
help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

.PHONY: controlplane
controlplane: ## Build kube-apiserver, kubectl and etcd at the pinned versions (cached)
	@echo "==> control plane: kube-apiserver, kubectl and etcd (built once from the Go module proxy, several minutes on 2 cores; then cached)"
	@start=$$SECONDS; hack/build-controlplane.sh >/dev/null; echo "    ready in $$((SECONDS - start))s"

.PHONY: tools
tools: ## Build helm and promtool and fetch cert-manager's CRDs at the pinned versions (cached)
	@echo "==> tools: helm, promtool, cert-manager CRDs (built once from the Go module proxy, about 8 minutes; then cached)"
	@start=$$SECONDS; hack/build-tools.sh >/dev/null; echo "    ready in $$((SECONDS - start))s"

.PHONY: cluster
cluster: ## Start the local control plane (reuses a running one); kubeconfig in .dev/kubeconfig
	@hack/cluster.sh up --dir $(DEV) >/dev/null
	@echo "export KUBECONFIG=$(KUBECONFIG_DEV)   # contexts: admin alice bob carol dave ci-bot operator"

.PHONY: cluster-down
cluster-down: ## Stop the local control plane and remove its state
	@hack/cluster.sh down --dir $(DEV)

.PHONY: build
build: ## Build kubepam
	cargo build --release

.PHONY: crds
crds: ## Regenerate crds/ (and the chart's copy) from the Rust types
	cargo run --quiet -- crds > crds/kubepam.io.yaml
	cp crds/kubepam.io.yaml charts/kubepam/files/crds/kubepam.io.yaml

.PHONY: demo
demo: ## Start the local control plane and kubepam in the background, and print what to try as alice and bob
	@hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop the demo: kubepam and the local control plane, nothing left behind
	@hack/demo.sh down

.PHONY: run
run: cluster ## Install CRDs and RBAC into the local cluster and run kubepam in the foreground as `operator`
	$(KUBECTL) --kubeconfig $(KUBECONFIG_DEV) --context admin apply --server-side -k hack/local/
	$(KUBECTL) --kubeconfig $(KUBECONFIG_DEV) --context admin wait --for condition=Established --timeout 60s -f crds/kubepam.io.yaml
	cargo run --release -- run --kubeconfig $(KUBECONFIG_DEV) --context operator \
		--webhook-bind 127.0.0.1:$(WEBHOOK_PORT) --webhook-url https://127.0.0.1:$(WEBHOOK_PORT) \
		--webhook-client-ca-file $(DEV)/pki/webhook-client-ca.crt

.PHONY: bench
bench: controlplane ## Measure latency, expiry lag, throughput and RSS on the local control plane (see BENCHMARKS.md)
	cargo bench --bench lifecycle

.PHONY: fmt
fmt: ## Format the code
	cargo fmt

.PHONY: lint
lint: ## rustfmt check and clippy with warnings as errors
	cargo fmt --check
	cargo clippy --workspace --all-targets -- -D warnings

.PHONY: test
test: controlplane tools testtools ## Run the whole test suite (unit, property, and real control-plane tests)
	@echo "==> cargo test: compiles the workspace first (several minutes the first time on 2 cores), then runs every suite"
	@start=$$SECONDS; status=0; cargo test --locked --workspace --lib --bins --tests || status=$$?; \
	  hack/check-test-processes.sh || status=1; \
	  echo "    tests finished in $$((SECONDS - start))s"; exit $$status

# The SMTP server the notification tests send to (aiosmtpd from PyPI), in a
# virtualenv of its own under target/.
TEST_PYTHON := target/testtools/bin/python3
.PHONY: testtools
testtools: $(TEST_PYTHON)
$(TEST_PYTHON): hack/testtools-requirements.txt
	@echo "==> test tools: an SMTP server (aiosmtpd) in target/testtools"
	python3 -m venv target/testtools
	target/testtools/bin/pip install --quiet --disable-pip-version-check -r hack/testtools-requirements.txt
	@touch $@
