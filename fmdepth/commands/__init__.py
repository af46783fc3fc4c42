"""One module per ``fmdepth`` subcommand (see :mod:`fmdepth.cli`)."""
