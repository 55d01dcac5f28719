"""Benchmarks of newscrawl (issue 6, part 2); see bench/RESULTS.md.

Run each from the repository's root as `.local/venv/bin/python bench/<name>.py`.
"""
