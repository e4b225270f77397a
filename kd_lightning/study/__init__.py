"""The study as a whole: its runs as one plan, run as Hydra multiruns or as a deadline-bound process pool,
its wall-time summary, and the speed targets it and the benchmark are judged against.

`python -m kd_lightning.study` (cli.py) is the entry point of `make reproduce`, `make methods` and
`scripts/gpu_study.sh`.
"""
