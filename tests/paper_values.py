"""The paper's numbers the tests compare with, typed in from SPEC §4 (a data module, imported by the unit and
script tests of the figures)."""

# SPEC §4, typed in: Spearman r printed in the paper (Fig. 2 ACC, Fig. 2 MSE, Fig. 3 LoRA gain).
SPEC_R = {
    "Qwen/Qwen2-0.5B": (0.69, 0.70, 0.77),
    "Qwen/Qwen2-1.5B": (0.64, 0.68, 0.67),
    "Qwen/Qwen2-7B": (0.82, 0.68, 0.59),
    "apple/OpenELM-270M": (0.57, 0.42, 0.87),
    "apple/OpenELM-450M": (0.52, 0.46, 0.87),
    "apple/OpenELM-1_1B": (0.73, 0.43, 0.90),
    "apple/OpenELM-3B": (0.66, 0.73, 0.52),
    "meta-llama/Meta-Llama-3-8B": (0.72, 0.52, 0.40),
}
