"""Does a training-free score rank the datasets of a model like a downstream metric? (SPEC §3, §5)

The implementation is ``ntps/scripts/analyze.py`` (installed as the command ``ntps-analyze``);
``python analyze.py --help`` lists the flags. ``import analyze`` gives that module itself.
"""

import sys

from ntps.scripts import analyze as _script

if __name__ == "__main__":
    _script.run()
else:
    sys.modules[__name__] = _script
