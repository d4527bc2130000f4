"""``python -m efface``: the command line."""

from efface.cli import main

main()
