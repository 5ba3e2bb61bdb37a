"""The served teacher: a batched forward answering vLLM-style ``prompt_logprobs``."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import torch

from opd_core.api import LoadedModel, pad_left, position_ids_from_mask
from opd_remote.request import CompletionsRequest


class Scorer:
    """The teacher model and the batched forward that answers a request."""

    def __init__(self, loaded: LoadedModel, name: str, batch_size: int) -> None:
        self.model = loaded.model.eval().requires_grad_(False)
        self.tokenizer = loaded.tokenizer
        self.name = name
        self.batch_size = batch_size
        self.vocab_size = int(self.model.get_output_embeddings().weight.shape[0])
        self.max_len = int(getattr(self.model.config, "max_position_embeddings", 32768))
        self.device = next(self.model.parameters()).device
        self.lock = threading.Lock()  # one forward at a time: the model is shared

    @torch.no_grad()
    def prompt_logprobs(
        self, sequences: Sequence[list[int]], top_k: int
    ) -> tuple[list[list[dict[str, Any] | None]], list[int]]:
        """vLLM-style ``prompt_logprobs`` of each sequence, and the greedy next token of each."""
        results: list[list[dict[str, Any] | None]] = []
        next_tokens: list[int] = []
        for start in range(0, len(sequences), self.batch_size):
            chunk = sequences[start : start + self.batch_size]
            ids_BT, mask_BT = pad_left(chunk, pad_id=0)
            with self.lock:
                logits_BTV = self.model(
                    input_ids=ids_BT.to(self.device),
                    attention_mask=mask_BT.to(self.device),
                    position_ids=position_ids_from_mask(mask_BT).to(self.device),
                    use_cache=False,
                ).logits.float()
            next_tokens += logits_BTV[:, -1].argmax(-1).tolist()
            # position s of the first T - 1 outputs predicts token s + 1
            logprobs_BSV = torch.log_softmax(logits_BTV[:, :-1], dim=-1)
            for row, seq in enumerate(chunk):
                results.append(self._positions(logprobs_BSV[row], ids_BT[row], len(seq), top_k))
        return results, next_tokens

    def _positions(
        self, logprobs_SV: torch.Tensor, ids_T: torch.Tensor, length: int, top_k: int
    ) -> list[dict[str, Any] | None]:
        """The per-position entries of one left-padded sequence of ``length`` real tokens."""
        width = ids_T.shape[0]
        real_SV = logprobs_SV[width - length :]  # predictions of tokens 1..length-1
        actual_S = ids_T[width - length + 1 :].to(real_SV.device)
        actual_lp_S = real_SV.gather(-1, actual_S[:, None]).squeeze(-1)
        rank_S = (real_SV > actual_lp_S[:, None]).sum(-1) + 1
        top_lp_SK, top_ids_SK = real_SV.topk(top_k, dim=-1) if top_k else (None, None)
        actual, actual_lp, ranks = actual_S.tolist(), actual_lp_S.tolist(), rank_S.tolist()
        top_ids = top_ids_SK.tolist() if top_ids_SK is not None else [[]] * len(actual)
        top_lps = top_lp_SK.tolist() if top_lp_SK is not None else [[]] * len(actual)
        seen = sorted({*actual, *(i for row in top_ids for i in row)})
        names = dict(zip(seen, self.tokenizer.convert_ids_to_tokens(seen), strict=True))
        out: list[dict[str, Any] | None] = [None]
        for s, token in enumerate(actual):  # JSON serialisation: one dict per position
            entry = {
                str(i): {"logprob": lp, "rank": k + 1, "decoded_token": names[i]}
                for k, (i, lp) in enumerate(zip(top_ids[s], top_lps[s], strict=True))
            }
            entry[str(token)] = {
                "logprob": actual_lp[s],
                "rank": ranks[s],
                "decoded_token": names[token],
            }
            out.append(entry)
        return out


def completion_response(scorer: Scorer, request: CompletionsRequest) -> dict[str, Any]:
    """The ``/v1/completions`` reply, in vLLM's layout."""
    prompt_logprobs, next_tokens = scorer.prompt_logprobs(request.sequences, request.top_k)
    choices = []
    for index, (seq, positions, token) in enumerate(
        zip(request.sequences, prompt_logprobs, next_tokens, strict=True)
    ):
        text = scorer.tokenizer.decode([token]) if request.max_tokens else ""
        if request.echo:
            text = scorer.tokenizer.decode(seq) + text
        choices.append(
            {
                "index": index,
                "text": text,
                "logprobs": None,
                "finish_reason": "length",
                "prompt_logprobs": positions,
                "prompt_token_ids": seq,
            }
        )
    prompt_tokens = sum(len(s) for s in request.sequences)
    return {
        "id": f"cmpl-{time.time_ns()}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": scorer.name,
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": request.max_tokens * len(choices),
            "total_tokens": prompt_tokens + request.max_tokens * len(choices),
        },
    }
