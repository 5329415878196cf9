"""The training-free baselines of one statistics artifact, one row per layer (NTPS itself: K_sweep.py).

The implementation is ``ntps/scripts/scores.py`` (installed as the command ``ntps-scores``);
``python scores.py --help`` lists the flags. ``import scores`` gives that module itself.
"""

import sys

from ntps.scripts import scores as _script

if __name__ == "__main__":
    _script.run()
else:
    sys.modules[__name__] = _script
