"""The registries of report sections: :data:`RUN_SECTIONS` and :data:`SWEEP_SECTIONS`.

A section is a provider ``fn(directory: Path) -> str | None``: it returns a Markdown
section (it may write PNGs into ``directory`` and link them by file name) or ``None``
when the directory has nothing for it. It must not raise on a directory that lacks its
files (:func:`fedsim.report.render_sections` still contains a failure, noting it in the
report). Sections are registered here, explicitly and in report order: a feature adds
its section by importing its provider below and registering it under a short name.
``tests/test_contracts.py`` runs every registered section on an empty run directory.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fedsim.audit.report import audit_section
from fedsim.registry import Registry
from fedsim.report.clinical import clinical_section, site_evaluation_section
from fedsim.report.run import accuracy_section, clients_section, epsilon_section, overview_section
from fedsim.report.sweep import sweep_section
from fedsim.robustness.report import report_section as robustness_section
from fedsim.valuation.analysis import report_section as selection_consistency_section
from fedsim.valuation.report import report_section as valuation_section

Section = Callable[[Path], "str | None"]
"""A section provider (see the module docstring)."""

RUN_SECTIONS: Registry[Section] = Registry("report section", "run report section")
"""Sections of a run directory's report, in registration (= report) order."""
RUN_SECTIONS.register("overview")(overview_section)
RUN_SECTIONS.register("accuracy")(accuracy_section)
RUN_SECTIONS.register("clinical")(clinical_section)
RUN_SECTIONS.register("site_evaluation")(site_evaluation_section)
RUN_SECTIONS.register("epsilon")(epsilon_section)
RUN_SECTIONS.register("clients")(clients_section)
RUN_SECTIONS.register("audit")(audit_section)
RUN_SECTIONS.register("valuation")(valuation_section)
RUN_SECTIONS.register("selection_consistency")(selection_consistency_section)
RUN_SECTIONS.register("robustness")(robustness_section)

SWEEP_SECTIONS: Registry[Section] = Registry("report section", "sweep report section")
"""Sections of a sweep directory's report, in registration (= report) order."""
SWEEP_SECTIONS.register("sweep")(sweep_section)
