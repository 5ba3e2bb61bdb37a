"""The tool-use demo: arithmetic with a calculator the student must call, its environment,
the demo's tool-using teacher and student (built once and cached) and prefix replay."""

DEPENDS_ON = ("opd_arith", "opd_hf")
"""Plugins this one imports: the arithmetic problems, tokenizer, SFT and cached build
(``opd_arith``), and the transformers backend the models are built, loaded and run with."""
