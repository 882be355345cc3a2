"""`python -m roofseg` entry point (see cli/main.py)."""
import sys

from roofseg.cli.main import main

sys.exit(main())
