"""The paper's sklearn probes (Fig. 2, SPEC §3) on the features cached by ``cache.py --save_features``.

The implementation is ``ntps/scripts/linear_sklearn.py`` (installed as the command ``ntps-sklearn-probes``);
``python linear_sklearn.py --help`` lists the flags. ``import linear_sklearn`` gives that module itself.
"""

import sys

from ntps.scripts import linear_sklearn as _script

if __name__ == "__main__":
    _script.run()
else:
    sys.modules[__name__] = _script
