"""The Hugging Face ``transformers`` backend: model loading (:mod:`opd_hf.loading`), the decode
loop (:mod:`opd_hf.generation`), the student sampler and the teacher."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opd_core import hookimpl
from opd_core.api import Registry, store_config_dir

if TYPE_CHECKING:
    import torch

    from opd_core.api import LoadedModel, ModelSpec

__all__ = ["opd_load_model", "opd_register_components", "opd_register_configs"]


@hookimpl(trylast=True)
def opd_load_model(spec: ModelSpec, role: str, device: torch.device) -> LoadedModel:
    """The fallback model loader: ``spec.path`` (a local folder, a Hub id or a ``.gguf`` file)
    is loaded with transformers when no other plugin claims it."""
    from opd_hf.loading import load_hf_model  # torch and transformers, when a model loads

    return load_hf_model(spec, role, device)


@hookimpl
def opd_register_components(registry: Registry) -> None:
    registry.add("sampler", "hf", "opd_hf.sampler:HFSampler")
    registry.add("sampler", "teacher_samples", "opd_hf.offpolicy:TeacherSamples")
    registry.add("sampler", "dataset", "opd_hf.dataset_sampler:DatasetSamples")
    registry.add("teacher", "hf", "opd_hf.teacher:HFTeacher")
    registry.add("teacher", "student_initial", "opd_hf.initial:StudentInitialTeacher")
    registry.add("teacher", "cross_tokenizer", "opd_hf.cross_tokenizer:CrossTokenizerTeacher")


@hookimpl
def opd_register_configs(store: Any) -> None:
    """This plugin's options (``conf/<group>/<option>.yaml``), stored as a third-party
    package's are."""
    store_config_dir(store, "opd_hf")
