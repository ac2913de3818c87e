"""minquant's benchmarks (run with ./run bench; results in benchmarks/RESULTS.md)."""
