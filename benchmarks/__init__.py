"""Side-by-side benchmarks: every figure is measured beside its baseline in the same run."""
