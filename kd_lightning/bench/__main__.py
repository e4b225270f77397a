"""Entry point of `python -m kd_lightning.bench`."""

from kd_lightning.bench.cli import main

main()
