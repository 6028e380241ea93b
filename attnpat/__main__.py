"""`python -m attnpat ...` runs the command line (see attnpat.cli)."""

from .cli import main

raise SystemExit(main())
