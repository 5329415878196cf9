"""LoRA fine-tuning (SPEC §3, Fig. 3): PEFT LoRA (r 32, alpha 32, dropout 0.05) on the attention q/k/v

The implementation is ``ntps/scripts/lora_finetuning.py`` (installed as the command ``ntps-lora``);
``python lora_finetuning.py --help`` lists the flags. ``import lora_finetuning`` gives that module itself.
"""

import sys

from ntps.scripts import lora_finetuning as _script

if __name__ == "__main__":
    _script.run()
else:
    sys.modules[__name__] = _script
