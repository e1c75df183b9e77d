import sys

from warpforge_launch.cli import main

sys.exit(main())
