import sys

from nutshell.cli import main

sys.exit(main())
