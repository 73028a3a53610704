"""Runs one measuring phase of benchmarks/scale.py in this process, and what the phases share.

    python benchmarks/scale_phases.py pipeline|study SETTINGS.json RESULT.json

The phases are ``scale_pipeline.py`` and ``scale_study.py``. SETTINGS.json is what
``scale.measure_size`` writes; RESULT.json gets the phase's figures, or ``{"failed": why}`` when it
raised. Peak memory is the process' own, reset per step (``Steps``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import harness

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TUNE_SPLIT, HELDOUT_SPLIT = "train", "test"
QUALITY_METRICS = ("nDCG@10", "Recall@100")
MINILM_STEP = "MiniLM encoding"
DEPTH = 100  # the pipelines' first-stage depth; the engines are asked for as many hits


# --- memory and time of the steps inside one phase --------------------------------------------------


def peak_rss_mb() -> float | None:
    """Returns this process' peak resident memory (VmHWM) in MiB, or None where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Resets VmHWM to the current RSS (Linux ≥ 4.0); returns whether it could."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Steps:
    """Seconds and peak RSS of each named step of a phase."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.peak_rss_mb: dict[str, float | None] = {}
        self.peak_is_per_step = True

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        self.peak_is_per_step &= reset_peak_rss()
        started = time.perf_counter()
        print(f"  {name} ...", flush=True)
        yield
        self.seconds[name] = time.perf_counter() - started
        self.peak_rss_mb[name] = peak_rss_mb()
        print(f"  {name}: {self.seconds[name]:.2f} s, peak RSS {self.peak_rss_mb[name] or 0:.0f} MiB", flush=True)

    def report(self, leave_out_prefix: str = "\0") -> dict[str, Any]:
        """Returns the figures; ``peak_rss_mb_max`` leaves out steps named with ``leave_out_prefix``."""
        peaks = [
            value
            for name, value in self.peak_rss_mb.items()
            if value is not None and not name.startswith(leave_out_prefix)
        ]
        return {
            "seconds": self.seconds,
            "peak_rss_mb": self.peak_rss_mb,
            "peak_rss_mb_max": max(peaks) if peaks else None,
            "peak_rss_is_per_step": self.peak_is_per_step,
        }


def folder_bytes(folder: Path) -> int:
    """Returns the bytes of the files under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


# --- what both phases and the parent share ---------------------------------------------------------


def ann_settings(ann: str, ann_params: dict[str, Any]) -> dict[str, Any]:
    """Returns the dense config's index keys: ``index`` and its parameters (unknown keys fail when the config is built)."""
    return {"index": ann, **ann_params}


def dense_config(settings: dict[str, Any], model: str | None = None, ann: str | None = None):
    """Returns the dense first stage of the run's settings (``model``/``ann`` override them); raises ``ConfigError``."""
    from workbench.retrieval.config import pipeline_config_from_dict

    stage = {"kind": "dense", "model": model or settings["dense_model"]}
    stage |= ann_settings(ann or settings["ann"], settings["ann_params"] if ann is None else {})
    return pipeline_config_from_dict({"retrievers": [stage]}, source="--dense-model/--ann/--ann-param").retrievers[0]


def pipeline_config(name: str, retrievers: tuple, **fusion: Any):
    from workbench.retrieval.config import FusionConfig, PipelineConfig

    return PipelineConfig(
        name=name,
        retrievers=retrievers,
        fusion=FusionConfig(**fusion),
        first_stage_depth=DEPTH,
        output_depth=DEPTH,
    )


def latency_figures(latency) -> dict[str, float]:
    return {"p50_ms": latency.p50_ms, "p95_ms": latency.p95_ms, "mean_ms": latency.mean_ms}


def one_at_a_time(search_text):
    """Adapts a function of one query text to ``time_queries``' batches of one query."""
    return lambda batch: search_text(next(iter(batch.values())))


PHASES = ("pipeline", "study")


def main() -> None:
    phase, settings_file, result_file = sys.argv[1:]
    if phase == "pipeline":
        from scale_pipeline import pipeline_phase as run_phase
    else:
        from scale_study import study_phase as run_phase
    try:
        figures = run_phase(json.loads(Path(settings_file).read_text()))
    except Exception as error:
        Path(result_file).write_text(json.dumps({"failed": f"{type(error).__name__}: {error}"}))
        raise
    Path(result_file).write_text(json.dumps(figures, indent=2, default=harness.json_default))


if __name__ == "__main__":
    main()
