# startgate: `make help` lists the targets.

MODULE  := github.com/startgate/startgate
# One version for the binaries and the packages, from git (hack/version.sh
# says how); make VERSION=X.Y.Z sets another. Expanded once, here.
ifeq ($(origin VERSION),undefined)
VERSION := $(shell sh hack/version.sh 2>/dev/null || echo dev)
endif
LDFLAGS := -X $(MODULE)/internal/version.Version=$(VERSION)
BIN     := $(CURDIR)/bin
PROTO   := proto/startgate/v1/startgate.proto

PROTOC_GEN_GO      := google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
PROTOC_GEN_GO_GRPC := google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1

# protoc with the plugins from ./bin; $(1) is the output directory.
protoc = PATH=$(BIN):$$PATH protoc -I proto \
	--go_out=$(1) --go_opt=module=$(MODULE) \
	--go-grpc_out=$(1) --go-grpc_opt=module=$(MODULE) $(PROTO)

.DEFAULT_GOAL := help

.PHONY: help build tools proto check-proto fmt-check vet verify-units check-monitoring package package-lint test reboot-check fuzz deps kube cluster demo bench bench-kube clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  %-14s %s\n", $$1, $$2}'

build: ## Build bin/startgated and bin/startgatectl
	go build -ldflags "$(LDFLAGS)" -o $(BIN)/startgated ./cmd/startgated
	go build -ldflags "$(LDFLAGS)" -o $(BIN)/startgatectl ./cmd/startgatectl

tools: ## Install protoc-gen-go and protoc-gen-go-grpc into ./bin
	GOBIN=$(BIN) go install $(PROTOC_GEN_GO)
	GOBIN=$(BIN) go install $(PROTOC_GEN_GO_GRPC)

proto: tools ## Regenerate the gRPC code from proto/
	$(call protoc,.)

check-proto: tools ## Fail if the generated code is not what proto/ generates
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(call protoc,$$tmp) && \
	diff -r -x '*.proto' -x 'doc.go' $$tmp/proto/startgate/v1 proto/startgate/v1 && \
	echo "check-proto: generated code is up to date"

fmt-check: ## Fail if any Go file is not gofmt-ed
	@out=$$(gofmt -l $$(git ls-files '*.go') $$(git ls-files --others --exclude-standard '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

vet: ## go vet every package
	go vet ./...

verify-units: ## systemd-analyze verify the units in packaging/systemd
	bash hack/verify-units.sh

# KUBE_BIN runs hack/kubernetes/build.sh: it prints the directory of the
# Kubernetes binaries, building them into ~/.cache/startgate the first time.
KUBE_BIN = bash hack/kubernetes/build.sh

# go test's default 10 minutes is per package: e2e, which runs real
# containerd, registries, clusters and startgated pairs one after another,
# takes 10 to 13 minutes on a new 2-core machine.
TEST_TIMEOUT ?= 30m

# make test ends with reboot-check (about 6 minutes): the proof that a
# node keeps its runtime across reboots and restarts. On a machine that
# cannot boot a node (not root, no overlayfs) it says why and passes,
# except under CI=true, where it fails. REBOOT_CHECK= (empty) leaves it out.
REBOOT_CHECK ?= 1

test: deps kube fmt-check vet check-proto verify-units check-monitoring package-lint ## Install what is missing, all checks, then go test -race (with the cluster tests' Kubernetes binaries), then every fuzz target briefly, then reboot-check (REBOOT_CHECK= leaves it out)
	bin=$$($(KUBE_BIN)) && STARTGATE_KUBE_BIN=$$bin go test -race -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) fuzz
	@if [ -n "$(REBOOT_CHECK)" ]; then REBOOT_CHECK_SKIP_UNABLE=1 $(MAKE) reboot-check; else echo "test: reboot-check left out (REBOOT_CHECK is empty)"; fi

# BOOT names the tool that boots a root with systemd as PID 1 ("BOOT
# up|exec|cp|reboot|down NAME"): hack/sysboot.sh boots this machine's own
# root; ../shared/fresh/boot a pristine debootstrap'd one.
BOOT ?= hack/sysboot.sh

reboot-check: ## As root: kubelet switched to startgated under a real systemd (BOOT, hack/sysboot.sh) keeps its runtime across a reboot and restarts in any order; disable, failures half way and dpkg -r give its files back byte for byte (5 to 8 minutes)
	BOOT="$(BOOT)" STARTGATE_KUBE_BIN="$$($(KUBE_BIN))" bash hack/reboot-check.sh

# The parsers of what comes from outside: PSI files, the config file,
# docker config.json, the registry's webhook, the pod metadata kubelet
# passes. go test runs their seeds (testdata/fuzz) every time; this runs
# each fuzzer for FUZZTIME executions.
FUZZ_TARGETS = internal/pressure:FuzzParseSomeTotal internal/pressure:FuzzSampler internal/config:FuzzLoad \
	internal/prefetch:FuzzParseDockerConfig internal/prefetch:FuzzNotification internal/criproxy:FuzzClassify
# A count, not a duration: with a duration, Go 1.26's fuzz coordinator can
# fail a clean run with "context deadline exceeded" when a worker is busy as
# the time runs out (go.dev/issue/75804, fixed in Go 1.27). 50,000 inputs is
# 2 to 17 s per target on a 2-core VM.
FUZZTIME ?= 50000x
# Go minimizes every new interesting input for up to 60 s by default, which
# spends a short run's time there, not fuzzing; 1000 tries keeps failing
# inputs small enough to read.
FUZZMINIMIZE ?= 1000x

fuzz: ## Run every fuzz target for FUZZTIME (50000x) inputs each
	@for t in $(FUZZ_TARGETS); do \
		echo "fuzz: $$t"; go test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) -fuzzminimizetime $(FUZZMINIMIZE) ./$${t%%:*} || exit 1; \
	done

deps: ## apt-get install what the build and tests need, if missing
	@missing=""; \
	command -v protoc >/dev/null || missing="$$missing protobuf-compiler"; \
	dpkg -s libprotobuf-dev >/dev/null 2>&1 || missing="$$missing libprotobuf-dev"; \
	{ command -v systemd-analyze >/dev/null && command -v systemd-socket-activate >/dev/null; } || missing="$$missing systemd"; \
	command -v git >/dev/null || missing="$$missing git"; \
	command -v containerd >/dev/null || missing="$$missing containerd"; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	dpkg -s busybox-static >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	command -v docker-registry >/dev/null || missing="$$missing docker-registry"; \
	command -v etcd >/dev/null || missing="$$missing etcd-server"; \
	[ -x /usr/lib/cni/bridge ] || missing="$$missing containernetworking-plugins"; \
	{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing="$$missing prometheus"; \
	command -v ip >/dev/null || missing="$$missing iproute2"; \
	command -v lintian >/dev/null || missing="$$missing lintian"; \
	command -v rpm >/dev/null || missing="$$missing rpm"; \
	command -v curl >/dev/null || missing="$$missing curl"; \
	command -v jq >/dev/null || missing="$$missing jq"; \
	command -v chattr >/dev/null || missing="$$missing e2fsprogs"; \
	if [ -n "$$missing" ]; then \
		echo "deps: installing$$missing"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	else echo "deps: nothing missing"; fi

check-monitoring: ## promtool: the alert rules parse, and each fires (and stays quiet) where monitoring/rules_test.yaml says
	cd monitoring && promtool check rules prometheus-rules.yaml && promtool test rules rules_test.yaml

GOARCH  ?= $(shell go env GOARCH)
NFPM    := github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.45.2
PKG     := $(BIN)/pkg
MAINTAINER = $(shell sed -n 's/^maintainer: //p' packaging/nfpm/nfpm.yaml)
# The commit's date goes into the man pages, so one commit gives one set.
SOURCE_DATE = $(shell git log -1 --format=%cI 2>/dev/null)

# package: the deb's prerm and the rpm's preun get release_kubelet
# (packaging/scripts/release-kubelet.sh) at their #RELEASE_KUBELET# line;
# the .rpm's nfpm config is nfpm.yaml with its changelog (see there).

package: ## Build dist/startgate_VERSION_ARCH.deb and .rpm (nfpm): binaries, units, config, completions, man pages, changelog, licences
	@case "$(VERSION)" in dev|"") echo "package: no version (not a git checkout?): make package VERSION=X.Y.Z" >&2; exit 1;; esac
	rm -rf $(PKG) && mkdir -p $(PKG)/completions $(PKG)/scripts/deb $(PKG)/scripts/rpm dist
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w $(LDFLAGS)" -o $(PKG)/ ./cmd/startgated ./cmd/startgatectl
	for sh in bash zsh fish; do $(PKG)/startgatectl completion $$sh > $(PKG)/completions/startgatectl.$$sh; done
	go run ./hack/genman -out $(PKG)/man -version $(VERSION) $(if $(SOURCE_DATE),-date $(SOURCE_DATE))
	gzip -9n $(PKG)/man/man1/*.1 $(PKG)/man/man8/*.8
	go run ./hack/genchangelog -version $(VERSION) -maintainer '$(MAINTAINER)' -deb $(PKG)/changelog.gz -chglog $(PKG)/changelog.yml
	sh hack/dependency-licenses.sh > $(PKG)/dependencies && gzip -9n $(PKG)/dependencies
	for s in deb/prerm rpm/preun; do \
		grep -qx '#RELEASE_KUBELET#' packaging/scripts/$$s || { echo "package: no #RELEASE_KUBELET# line in packaging/scripts/$$s" >&2; exit 1; }; \
		sed -e '/^#RELEASE_KUBELET#$$/{' -e 'r packaging/scripts/release-kubelet.sh' -e 'd' -e '}' packaging/scripts/$$s > $(PKG)/scripts/$$s && sh -n $(PKG)/scripts/$$s || exit 1; \
	done
	{ cat packaging/nfpm/nfpm.yaml; echo "changelog: $(PKG:$(CURDIR)/%=%)/changelog.yml"; } > $(PKG)/nfpm-rpm.yaml
	VERSION=$(VERSION) ARCH=$(GOARCH) go run $(NFPM) package --config packaging/nfpm/nfpm.yaml --packager deb --target dist/
	VERSION=$(VERSION) ARCH=$(GOARCH) go run $(NFPM) package --config $(PKG)/nfpm-rpm.yaml --packager rpm --target dist/
	@ls -l dist/

package-lint: package ## The packages as Debian and RPM check them: lintian on the .deb (errors and warnings fail), rpm's view of the .rpm, one version everywhere
	bash hack/package-lint.sh dist/startgate_$(VERSION)_$(GOARCH).deb $(VERSION)

kube: ## Build Kubernetes v1.34 (kubelet, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl) into ~/.cache/startgate once (about 15 minutes cold), print where
	$(KUBE_BIN)

# CLUSTER_FLAGS are extra startgate-cluster flags: make cluster CLUSTER_FLAGS=--direct
CLUSTER_FLAGS ?=

cluster: deps kube build ## A one-node Kubernetes cluster with startgated in kubelet's path, until Ctrl-C (as root; prints the KUBECONFIG to use)
	go build -ldflags "$(LDFLAGS)" -o $(BIN)/startgate-cluster ./harness/cmd/startgate-cluster
	$(BIN)/startgate-cluster --kube-bin "$$($(KUBE_BIN))" --startgatectl $(BIN)/startgatectl $(CLUSTER_FLAGS)

demo: deps ## Install what is missing, then the demo: the gate, then a patch rolled out to 20 pods direct, through startgated and with prefetch (about two minutes, as root)
	bash hack/demo.sh

# BENCH_FLAGS are extra startgate-bench flags: make bench BENCH_FLAGS="--pods 100 --json bench.json"
BENCH_FLAGS ?=

bench: deps ## Install what is missing, then the patch-rollout benchmark: 40 pods; direct, fixed-2/4/8, startgate, startgate-prefetch; 2 rounds (as root)
	go build -o $(BIN)/startgate-bench ./harness/cmd/startgate-bench
	$(BIN)/startgate-bench $(BENCH_FLAGS)

# bench-kube keeps every run's raw data: docs/bench-data/kube-DATE-COMMIT.json
# (each pod's timestamps, mode, round, the machine and versions), from which
# `startgate-bench kube --report FILE --charts docs/charts` prints the tables
# and draws the charts again. A checkout with changes is marked in the name.
# The file is rewritten after each mode's cycle; an interrupted run goes on
# with `bin/startgate-bench kube --resume FILE` and the same flags.
# PACEMAKER_SRC=DIR (a clone of github.com/woehrl01/pod-pacemaker) adds the
# pod-pacemaker modes (hack/pacemaker/build.sh builds it).
BENCH_DATA = docs/bench-data/kube-$$(date -u +%Y%m%dT%H%M%SZ)-$$(git rev-parse --short=12 HEAD)$$(git diff --quiet HEAD -- || echo -modified).json

bench-kube: deps kube ## The rollout benchmark on a real one-node cluster: 40 pods, a registry 20 ms away; the attribution modes and the users' alternatives, a warm-up and 5 rounds; raw data into docs/bench-data (as root; BENCH_FLAGS as for bench, e.g. --quick, --scenarios)
	go build -o $(BIN)/startgate-bench ./harness/cmd/startgate-bench
	mkdir -p docs/bench-data
	pm=; if [ -n "$$PACEMAKER_SRC" ]; then pm=--pacemaker-bin=$$(bash hack/pacemaker/build.sh) || exit 1; fi; \
	out=$(BENCH_DATA); $(BIN)/startgate-bench kube --kube-bin "$$($(KUBE_BIN))" $$pm --json "$$out" --charts docs/charts $(BENCH_FLAGS); rc=$$?; \
	  echo "bench-kube: raw data in $$out"; exit $$rc

clean: ## Remove build output
	rm -rf $(BIN)
