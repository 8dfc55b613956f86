"""``python -m autocompress.cli``."""

from autocompress.cli import main

main()
