"""ns.nn.functional: torch.nn.functional's names (see frontends/functional.py)."""
from nutshell.frontends.functional import *  # noqa: F401,F403
from nutshell.frontends.functional import __all__  # noqa: F401
