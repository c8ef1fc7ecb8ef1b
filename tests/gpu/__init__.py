"""GPU tests: run by benchmarks/gpu_check.sh on a GPU machine; every module skips cleanly without one.
Beside them, the check's helpers: kernel_launches.py (what compute-sanitizer runs) and argcheck.py
(the dry run's check of each GPU step's command line)."""
