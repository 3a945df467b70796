"""The whole study of Joel et al. 2022 in one resumable command: per bundle, train, evaluate, sweep the attacks,
adversarially train, sweep again, triage; then compare the data sets and write one report folder (``report.md`` and
its PNG figures, with the paper's published figures beside ours).

Modules: :mod:`~monai_adv.study.stages` (what each stage runs, reads and writes), :mod:`~monai_adv.study.setup` (a
bundle's data, overrides and settings), :mod:`~monai_adv.study.ledger` (fingerprints and the stage ledger),
:mod:`~monai_adv.study.runner` (running, skipping and resuming), :mod:`~monai_adv.study.susceptibility` and
:mod:`~monai_adv.study.compare_datasets` (the medical against non-medical comparison),
:mod:`~monai_adv.study.paper_figures` (the published numbers), :mod:`~monai_adv.study.report` (``report.md``) and
:mod:`~monai_adv.study.cli` (the command line).
"""

from monai_adv.study.runner import StageOutcome, StudyError, StudyResult, run_study
from monai_adv.study.stages import BUNDLE_STAGES, STAGE_NAMES, STUDY_STAGES

__all__ = ["run_study", "StudyError", "StudyResult", "StageOutcome", "BUNDLE_STAGES", "STUDY_STAGES", "STAGE_NAMES"]
