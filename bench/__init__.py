"""Benchmarks (not tests): `make bench` runs them all, `make bench BENCH=<name>` one of them."""
