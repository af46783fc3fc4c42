import sys

from fmdepth.cli import main

sys.exit(main())
