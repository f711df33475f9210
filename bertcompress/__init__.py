"""bertcompress: fine-tune, prune, quantize and evaluate BERT-family models on GLUE (core ML code only).

Knows nothing of Prefect or MLflow, so it runs anywhere torch and transformers do; flows/ and tasks/ drive it.
"""

import logging as _logging

# transformers imports torchao when it is installed: torchao logs its CUDA-only kernels as "Failed to load" on a
# CPU machine, and torch's pytree logs a deprecation of torchao's enums. Noise on every command, never actionable.
for _name in ("torchao", "torch.utils._pytree"):
    _logging.getLogger(_name).setLevel(_logging.ERROR)
