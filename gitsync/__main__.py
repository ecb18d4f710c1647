"""`python -m gitsync` runs the same CLI as the `gitsync` console script."""

from gitsync.cli import main

raise SystemExit(main())
