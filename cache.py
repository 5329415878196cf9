"""Stream one forward pass over a labelled split and accumulate the per-layer sums of SPEC §1.

The implementation is ``ntps/scripts/cache.py`` (installed as the command ``ntps-cache``);
``python cache.py --help`` lists the flags. ``import cache`` gives that module itself.
"""

import sys

from ntps.scripts import cache as _script

if __name__ == "__main__":
    _script.run()
else:
    sys.modules[__name__] = _script
