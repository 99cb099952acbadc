"""ns.nn.init: torch.nn.init's in-place initialisers (frontends/torch_init.py)
and the layers' named initialisers (frontends/init.py)."""
from nutshell.frontends.init import *  # noqa: F401,F403
from nutshell.frontends.torch_init import *  # noqa: F401,F403
