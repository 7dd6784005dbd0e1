"""`python -m ganinv ...` runs the `ganinv` command (for machines where the package is on PYTHONPATH but
not installed, so the console script does not exist)."""
from .cli import entry

entry()
