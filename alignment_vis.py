"""Fig. 1 for any statistics artifact: words projected on the top-2 perception (U) and autoregressive (V)

The implementation is ``ntps/scripts/alignment_vis.py`` (installed as the command ``ntps-alignment-vis``);
``python alignment_vis.py --help`` lists the flags. ``import alignment_vis`` gives that module itself.
"""

import sys

from ntps.scripts import alignment_vis as _script

if __name__ == "__main__":
    _script.run()
else:
    sys.modules[__name__] = _script
