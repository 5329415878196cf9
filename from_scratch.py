"""From-scratch baseline (SPEC §3): the same mean-pooled classifier on a randomly initialised model of

The implementation is ``ntps/scripts/from_scratch.py`` (installed as the command ``ntps-scratch``);
``python from_scratch.py --help`` lists the flags. ``import from_scratch`` gives that module itself.
"""

import sys

from ntps.scripts import from_scratch as _script

if __name__ == "__main__":
    _script.run()
else:
    sys.modules[__name__] = _script
