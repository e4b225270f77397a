"""`python -m kd_lightning.report`: the command line lives in cli.py so that importing the package stays light."""

import sys

from kd_lightning.report.cli import main

sys.exit(main())
