"""opd-core: on-policy distillation of language models, built from pluggy plugins.

Plugin authors import :data:`hookimpl` and the data types from here; the hooks themselves are
documented in :mod:`opd_core.hookspecs`.
"""

from opd_core.errors import OPDError
from opd_core.hookspecs import hookimpl
from opd_core.types import (
    Advantages,
    EnvReply,
    EpisodeStart,
    EpisodeSummary,
    EvalResult,
    GenerationParams,
    Generator,
    LossOutput,
    PolicyOutput,
    Prompt,
    RolloutBatch,
    RolloutPrefetcher,
    ScoreRequest,
    TeacherScores,
)

__all__ = [
    "Advantages",
    "EnvReply",
    "EpisodeStart",
    "EpisodeSummary",
    "EvalResult",
    "GenerationParams",
    "Generator",
    "LossOutput",
    "OPDError",
    "PolicyOutput",
    "Prompt",
    "RolloutBatch",
    "RolloutPrefetcher",
    "ScoreRequest",
    "TeacherScores",
    "hookimpl",
]
__version__ = "0.1.0"
