# One entry for everything. `make demo` and `make test` set the machine up first (idempotent).
.PHONY: setup demo test bench build

setup:
	.ci/setup

demo: setup
	.ci/demo

test: setup
	.ci/test

bench: setup
	.ci/bench

build: setup
	.ci/build
