"""`python -m roofseg` entry point (see cli.py)."""
import sys

from .cli import main

sys.exit(main())
