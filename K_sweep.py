"""Solve the generalized eigenproblems of every layer and write NTPS per layer × fraction.

The implementation is ``ntps/scripts/K_sweep.py`` (installed as the command ``ntps-sweep``);
``python K_sweep.py --help`` lists the flags. ``import K_sweep`` gives that module itself.
"""

import sys

from ntps.scripts import K_sweep as _script

if __name__ == "__main__":
    _script.run()
else:
    sys.modules[__name__] = _script
