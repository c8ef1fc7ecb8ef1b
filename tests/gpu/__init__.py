"""GPU tests: run by benchmarks/gpu_check.sh on a GPU machine; every module skips cleanly without one.
Beside them, the check's helpers: kernel_launches.py (what compute-sanitizer runs), argcheck.py
(the dry run's check of each GPU step's command line) and compare_prepare.py (`prepare --device
cuda`'s store against the CPU store of the same clips)."""
