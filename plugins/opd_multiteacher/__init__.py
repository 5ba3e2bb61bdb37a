"""The ``multi`` teacher: several teachers, each scoring the prompts routed to it.

Each sampled sequence goes to one teacher, chosen by a key of its prompt (``source`` by
default: the task or dataset it comes from, or ``metadata.<field>``). The teachers score their
rows; the scores are merged back into one :class:`TeacherScores` in the batch's order, with
``teacher/<name>/reverse_kl``, ``.../tokens`` and ``.../sequences`` logged per teacher, and
each teacher's scoring FLOPs as ``flops_step/teacher/<name>`` (the run's ``flops/teacher``
totals, which assume one teacher shape, stay 0).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opd_core import hookimpl
from opd_core.api import store_config_dir

if TYPE_CHECKING:
    from opd_core.api import Registry


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("teacher", "multi", "opd_multiteacher.teacher:MultiTeacher")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_multiteacher")
