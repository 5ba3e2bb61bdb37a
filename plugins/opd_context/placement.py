"""Where a prompt's ``teacher_context`` goes in the teacher's chat: a system turn or the user's."""

from __future__ import annotations

from dataclasses import replace

from opd_core import Prompt

PLACEMENTS = ("system", "user")


def with_context(prompt: Prompt, placement: str, template: str) -> Prompt:
    """``prompt`` as the teacher sees it: ``template`` (with ``{context}``) filled with the
    prompt's ``teacher_context``, put in a system turn before the chat (``system``; joined to
    an existing first system turn by a blank line) or before the last user turn's text
    (``user``, separated by a blank line). A prompt without context is returned unchanged."""
    if prompt.teacher_context is None:
        return prompt
    if not prompt.messages:
        raise ValueError(
            f"prompt {prompt.id} has no chat messages, so there is no turn to put its "
            "teacher_context in; use a chat prompt (e.g. task.doc_format=chat)."
        )
    block = template.format(context=prompt.teacher_context)
    messages = [dict(m) for m in prompt.messages]
    if placement == "system":
        if messages[0]["role"] == "system":
            messages[0]["content"] = f"{block}\n\n{messages[0]['content']}"
        else:
            messages.insert(0, {"role": "system", "content": block})
    elif placement == "user":
        users = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not users:
            raise ValueError(f"prompt {prompt.id} has no user turn to put its teacher_context in")
        last = users[-1]
        messages[last]["content"] = f"{block}\n\n{messages[last]['content']}"
    else:
        raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
    return replace(prompt, messages=tuple(messages))
