"""``python -m chain`` runs the ``blockcoin`` command line."""

from chain.cli import app

app()
