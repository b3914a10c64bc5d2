"""``python -m ablo``: the same command as ``ablo``."""

from .cli import main

main()
