"""What the benchmark scripts share; no script imports another.

- :mod:`bench_common.paths`: the repository, ``outputs/`` and each script's result files
  (``docs/results/<script>.{md,json,png}``, named after the script that writes them);
- :mod:`bench_common.runs`: ``python -m opd_core`` as a real process, worker processes, the
  command a report records, the machine's load and package versions;
- :mod:`bench_common.inprocess`: a run inside this process, with extra plugins;
- :mod:`bench_common.models`: random-init Qwen3 student/teacher pairs of given sizes;
- :mod:`bench_common.timing`: one timed point of opd-core, its per-step clock and its overrides;
- :mod:`bench_common.comparison`: the methods of the objective comparison and their run folders;
- :mod:`bench_common.costs`: what a set of curves spent to reach a score;
- :mod:`bench_common.report`: Markdown tables, the header that records the command, the
  ``.md``/``.json`` pair;
- :mod:`bench_common.plots`: figures (curves with the teacher's score, grouped bars).

Every module imports torch, transformers and matplotlib only inside the functions that need
them, so a worker started with another environment's Python (``.venv-vllm``) can import any.
"""
