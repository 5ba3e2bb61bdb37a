"""The Hugging Face ``transformers`` backend: model loading, the student sampler, the teacher."""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.registry import Registry
from opd_hf.dataset_sampler import DatasetSamples
from opd_hf.loading import opd_load_model
from opd_hf.offpolicy import TeacherSamples
from opd_hf.sampler import HFSampler
from opd_hf.teacher import HFTeacher

__all__ = ["opd_load_model", "opd_register_components"]


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("sampler", "hf", HFSampler)
    registry.add("sampler", "teacher_samples", TeacherSamples)
    registry.add("sampler", "dataset", DatasetSamples)
    registry.add("teacher", "hf", HFTeacher)
