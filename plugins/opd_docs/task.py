"""The ``company_docs`` task: a folder of documents as mid-training data, mixed with chat data.

Its train prompts carry their training text in ``Prompt.reference`` (see :mod:`opd_docs.data`):
run it with ``sampler=dataset`` (``+experiment=docs_sft``) to fine-tune on them. It has no eval
split and no grader; knowledge of the documents is measured by the ``qa_accuracy`` evaluator.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from opd_core import OPDError, Prompt, hookimpl
from opd_core.api import RunContext, read_chat_jsonl
from opd_docs.data import DOC_FORMATS, document_prompts, mix, read_documents

log = logging.getLogger("opd_core")


class CompanyDocsTask:
    """Document chunks of at most ``max_tokens`` student tokens (``docs_fraction`` of each
    epoch) and chat examples from ``chat_path`` (the rest), in a seeded order."""

    def __init__(
        self,
        docs_dir: str | None = None,
        chat_path: str | None = None,
        docs_fraction: float = 0.7,
        max_tokens: int = 512,
        doc_format: str = "text",
        seed: int | None = None,
    ) -> None:
        if not 0 < docs_fraction <= 1:
            raise ValueError(f"docs_fraction must be in (0, 1], got {docs_fraction}")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if doc_format not in DOC_FORMATS:
            raise ValueError(f"doc_format must be one of {', '.join(DOC_FORMATS)}")
        self.docs_dir = docs_dir
        self.chat_path = chat_path
        self.docs_fraction = docs_fraction
        self.max_tokens = max_tokens
        self.doc_format = doc_format
        self.seed = seed
        self._train: list[Prompt] | None = None

    def setup(self, ctx: RunContext) -> None:
        if self.docs_dir is None:
            raise OPDError(
                "task.docs_dir is not set; point it at a folder of .md/.txt documents "
                "(python -m opd_docs.synthetic --out DIR writes a synthetic company's)."
            )
        if self.chat_path is None and self.docs_fraction < 1:
            raise OPDError(
                f"task.docs_fraction={self.docs_fraction} mixes in chat data but task.chat_path "
                "is not set; give a JSONL of chat examples, or set task.docs_fraction=1.0."
            )
        self.tokenizer = ctx.student.tokenizer
        if self.seed is None:
            self.seed = ctx.seed

    def count_tokens(self, text: str) -> int:
        """Length of ``text`` in student tokens."""
        return len(self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    @hookimpl
    def opd_task_prompts(self, split: str) -> Sequence[Prompt]:
        if split != "train":
            return []
        if self._train is None:
            self._train = self._build()
        return self._train

    def _build(self) -> list[Prompt]:
        assert self.docs_dir is not None and self.seed is not None, "setup() runs first"
        documents = read_documents(Path(self.docs_dir).expanduser())
        doc_texts = document_prompts(documents, self.count_tokens, self.max_tokens, self.doc_format)
        chat = []
        if self.chat_path is not None:  # read (and checked) even when the mix needs none of it
            examples = read_chat_jsonl(Path(self.chat_path).expanduser(), need_response=True)
            chat = [e.to_prompt(f"chat-{i}", "chat") for i, e in enumerate(examples)]
        epoch = mix(doc_texts, chat, self.docs_fraction, self.seed)
        log.info(
            "company_docs: %d documents -> %d texts of <= %d tokens, plus %d chat examples "
            "(of %d) per epoch",
            len(documents),
            len(doc_texts),
            self.max_tokens,
            len(epoch) - len(doc_texts),
            len(chat),
        )
        return epoch
