"""Golden outputs: what a function gives for a fixed set of inputs, kept as files and
compared by the tests, so that a rule change is reviewed as a diff of outputs.
`python -m tests.golden.regenerate` rewrites them (tests/golden/regenerate.py)."""
