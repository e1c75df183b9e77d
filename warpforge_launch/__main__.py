import sys

from warpforge_launch.cli import run

sys.exit(run())
