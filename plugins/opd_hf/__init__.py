"""The Hugging Face ``transformers`` backend: model loading, the student sampler, the teacher."""

from __future__ import annotations

from opd_core import hookimpl
from opd_core.registry import Registry
from opd_hf.loading import opd_load_model

__all__ = ["opd_load_model", "opd_register_components"]


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("sampler", "hf", "opd_hf.sampler:HFSampler")
    registry.add("sampler", "teacher_samples", "opd_hf.offpolicy:TeacherSamples")
    registry.add("sampler", "dataset", "opd_hf.dataset_sampler:DatasetSamples")
    registry.add("teacher", "hf", "opd_hf.teacher:HFTeacher")
    registry.add("teacher", "student_initial", "opd_hf.initial:StudentInitialTeacher")
    registry.add("teacher", "cross_tokenizer", "opd_hf.cross_tokenizer:CrossTokenizerTeacher")
