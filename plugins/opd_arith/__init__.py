"""The embedded demo's arithmetic task: problems, tokenizer, SFT and the offline model build."""

DEPENDS_ON = ("opd_hf",)
"""Plugins this one imports: the demo models are built and loaded with the transformers backend."""
