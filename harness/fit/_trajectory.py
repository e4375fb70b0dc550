"""A trajectory to fit, from a file or from the store: the two uncertainties at each t, optional gap and
accuracies, what can be resampled for the intervals, and what it describes."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from si_bench.fit._replicates import pooled_replicates, run_centre


@dataclass
class Trajectory:
    t: np.ndarray
    solver_uncertainty: np.ndarray  # U_s (or per token)
    verifier_uncertainty: np.ndarray  # U_v (or per token)
    gap: np.ndarray | None = None  # a measured gap series, when one is given
    solver_accuracy: np.ndarray | None = None
    verifier_accuracy: np.ndarray | None = None
    se: np.ndarray | None = None  # (T, 2) standard errors of (solver, verifier) per point, when given
    # What the intervals resample: one (T, P, 2) array per run of per-prompt (solver, verifier) values on the
    # shared t grid (P = 1 for a run known only by its series). Empty: residuals only.
    runs: list[np.ndarray] = field(default_factory=list, repr=False)
    # What it describes (the store fills these).
    run_id: str = ""
    model: str = ""
    dataset: str = ""
    split: str = ""
    verifier: str = ""
    mode: str | None = None
    t_unit: str = "round"
    unit: str = "total"
    source: str = "measured"
    eval_ids: list[str] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)  # the runs behind it (several for pooled seeds)

    @property
    def key(self) -> str:
        """fit_key in the store's `fits` table: run_id|dataset|split|verifier|unit."""
        return "|".join([self.run_id, self.dataset, self.split, self.verifier, self.unit])

    @property
    def n_points(self) -> int:
        return int(len(np.unique(self.t)))

    @property
    def n_prompts(self) -> int:
        """Prompts measured at every t in each run (0 when only series are known)."""
        return min((r.shape[1] for r in self.runs), default=0) if any(r.shape[1] > 1 for r in self.runs) else 0

    def replicates(self, n_boot: int = 500, seed: int = 0) -> np.ndarray | None:
        """(B, T, 2) resampled (solver, verifier) series: runs, then prompts within runs, centred on the series
        (which may rest on more prompts than those measured at every t). None when nothing can be resampled."""
        if n_boot <= 0 or not self.runs or (len(self.runs) == 1 and self.runs[0].shape[1] < 2):
            return None
        reps = pooled_replicates(self.runs, n_boot, seed)
        series = np.column_stack([self.solver_uncertainty, self.verifier_uncertainty])
        return reps + (series - run_centre(self.runs))[None]

    def resampling_note(self) -> str:
        if len(self.runs) > 1:
            what = f"{self.n_prompts} prompts within each" if self.n_prompts else "their series"
            return f"mean of {len(self.runs)} seed runs; CIs resample runs and {what}"
        if self.n_prompts:
            return f"CIs from resampling the {self.n_prompts} prompts measured at every t"
        return "CIs from the residuals (no per-prompt data shared by every t)"
