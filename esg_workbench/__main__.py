from esg_workbench.cli import main

raise SystemExit(main())
