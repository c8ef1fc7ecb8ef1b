"""GPU tests: run by benchmarks/gpu_check.sh on a GPU machine; every module skips cleanly without one."""
