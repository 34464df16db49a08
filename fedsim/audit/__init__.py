"""Statistics of an empirical privacy audit (``fedsim audit``): pure, side-effect-free.

- :mod:`fedsim.audit.gaussian` — δ(ε) and ε(δ) of μ-GDP, and ε of a pair of Gaussians with
  unequal variances (exact hockey-stick divergence).
- :mod:`fedsim.audit.one_shot` — Andrew et al.'s one-shot ε *estimate* (ICLR 2024).
- :mod:`fedsim.audit.one_run` — Steinke, Nasr & Jagielski's one-run ε *lower bound*
  (NeurIPS 2023).
- :mod:`fedsim.audit.verdict` — claimed ε against a lower bound.
- :mod:`fedsim.audit.canaries` — the canary clients a user-level audit adds (imported by
  every simulation's workers, so this package imports none of the statistics, which
  bring SciPy's ``stats`` and ``optimize``: ~0.7 s of CPU per process).
"""
