"""Benchmarks: every figure of the platform beside its baseline, measured in the same run.

``bench/run`` (see ``bench/README.md``) starts what it needs and writes the
results into ``bench/results/`` and the results page ``docs/benchmarks.md``.
"""
