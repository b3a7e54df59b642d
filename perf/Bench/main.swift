// aegiskv-bench: the bundled load generator. See perf/README.md.
BenchCommand.main()
