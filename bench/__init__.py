"""Benchmarks: each bench/bench_<name>.py has a main(argv) that prints a table (or --json)."""
