"""Concrete attacks of every task.  Importing this package registers every attack in ``advbench.attack.ATTACKS``.

Adding an attack takes one file with a ``@register_attack`` decorator, one import line here and one
row in the test table (``tests/test_attack_registry.py``), whatever its task: classifier attacks subclass
:class:`advbench.attack.Attack`, roof-patch attacks :class:`advbench.attacks.patch.PatchAttack` and multi-task
attacks :class:`advbench.attacks.multitask.MultiTaskAttack`.
"""

from advbench.attacks import (
    adv_cloud,  # noqa: F401
    apgd,  # noqa: F401
    autoattack,  # noqa: F401
    ensemble,  # noqa: F401
    multitask,  # noqa: F401
    patch,  # noqa: F401
    pgd,  # noqa: F401
    torchattacks_adapter,  # noqa: F401
    transforms,  # noqa: F401
    universal,  # noqa: F401
)
