"""``python -m chain`` runs the ``blockcoin`` command line."""

from chain.app.cli import main

main()
