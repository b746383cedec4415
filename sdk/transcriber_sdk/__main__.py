"""`python -m transcriber_sdk`: the same command line as the `transcriber` script."""

from .cli import main

raise SystemExit(main())
