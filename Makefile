# One entry for everything. `make demo` and `make test` set the machine up first (idempotent).
.PHONY: setup demo test bench build fuzz

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

# A longer fuzzing run than the test command's (FUZZ_SECONDS a target, default 600).
fuzz: setup
	.ci/fuzz $${FUZZ_SECONDS:-600}
