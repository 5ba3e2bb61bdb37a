"""The library: helpers that plugins share and the loop does not need (cache folders and the
locks that guard them, JSONL and chat-data readers, tabular rows, evaluator roles).

Plugins reach them through :mod:`opd_core.api`; nothing in the kernel imports them.
"""
