import sys

from snakegrinder.cli import main

sys.exit(main())
