"""warpforge-launch: submit snakegrinder jobs anywhere, and run the Holmes Mark 1 lab."""

__version__ = "0.1.0"
