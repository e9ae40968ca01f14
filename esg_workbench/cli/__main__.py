"""python -m esg_workbench.cli"""

from esg_workbench.cli import main

raise SystemExit(main())
