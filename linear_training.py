"""Linear probe (SPEC §3, Fig. 3 baseline): a frozen causal LM, mean pooling of its last hidden state,

The implementation is ``ntps/scripts/linear_training.py`` (installed as the command ``ntps-linear``);
``python linear_training.py --help`` lists the flags. ``import linear_training`` gives that module itself.
"""

import sys

from ntps.scripts import linear_training as _script

if __name__ == "__main__":
    _script.run()
else:
    sys.modules[__name__] = _script
