"""`python -m kd_lightning.study`: the command line lives in cli.py so that importing the package stays light."""

import sys

from kd_lightning.study.cli import main

sys.exit(main())
