"""Gather the outputs of our runs into one long table (input of analyze.py, the figures and the report).

The implementation is ``ntps/scripts/collect.py`` (installed as the command ``ntps-collect``);
``python collect.py --help`` lists the flags. ``import collect`` gives that module itself.
"""

import sys

from ntps.scripts import collect as _script

if __name__ == "__main__":
    _script.run()
else:
    sys.modules[__name__] = _script
