"""`python -m learnbench.tools.report`: see learnbench.tools.report.cli."""

import sys

from learnbench.tools.report.cli import main

sys.exit(main())
