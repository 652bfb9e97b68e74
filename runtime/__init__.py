"""What runs inside workload containers, and as local processes for the local target.

Entry points: `python -m runtime.inference`, `python -m runtime.tuning`,
`python -m runtime.adapters pull`, `python -m runtime.data fetch`.
"""
