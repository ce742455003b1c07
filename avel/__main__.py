"""``python -m avel``: the command line."""

from avel.cli import app

app(prog_name="avel")
