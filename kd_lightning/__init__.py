"""kd-lightning: knowledge distillation on CIFAR-10 with PyTorch Lightning and Hydra.

The public API, for use outside the command line:

    from kd_lightning import resnet, distillation_loss, CIFAR10DataModule, DistillModule, load_record

Names are imported on first use, so `import kd_lightning` alone loads neither torch nor Lightning
(the report and the study summary run without them).
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> the module that owns it
_EXPORTS = {
    "resnet": "kd_lightning.models",
    "net_plan": "kd_lightning.plans",
    "distillation_loss": "kd_lightning.losses",
    "dkd_loss": "kd_lightning.losses",
    "CIFAR10DataModule": "kd_lightning.data",
    "BaselineModule": "kd_lightning.modules",
    "DistillModule": "kd_lightning.modules",
    "RunRecord": "kd_lightning.run.record",
    "load_record": "kd_lightning.run.record",
    "iter_runs": "kd_lightning.run.record",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'kd_lightning' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
