"""The guard on a choice made on generated questions: how far the generated set itself backs it.

A few dozen generated questions rank configurations poorly (benchmarks/synthetic.py: the order of
trials on them is close to unrelated to the order on real queries), and the best of many trials
on noisy labels is mostly the luckiest. So when a study tunes on a generated split, the choice is
checked on the tuning queries alone, before any held-out query is looked at:

* split-half agreement: Kendall's tau between the trials' orders on two random halves of the
  generated questions (averaged over seeded halvings): do the questions rank the trials alike?
* the bootstrap probability (over the generated questions) that the chosen trial beats the
  runner-up, and that it beats the robust default: RRF of BM25 and dense at default settings
  (BM25 alone when the space has no dense retriever).

The choice is kept only when both say so: the trials are ranked reliably (agreement at least
``guard.min_agreement``) and the choice clearly beats the robust default (probability at least
``guard.clearly_better``); otherwise the robust default is exported (``study.export.choose_export``).
Neither figure can see a bias the generated questions share (they are written from one passage
and reuse its words, which favours BM25), so a clear win on them alone is not enough.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.evaluation.metrics import evaluate
from workbench.evaluation.significance import split_half_agreement, win_probability
from workbench.retrieval.config import BM25Config, DenseConfig, FusionConfig, PipelineConfig
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.study.attributes import DUPLICATE_ATTR, TUNE_SCORES_ATTR
from workbench.study.config import StudyConfig
from workbench.study.crossval import same_pipeline
from workbench.study.objective import trial_config
from workbench.study.search_space import DenseCandidate, SearchSpace
from workbench.study.space import first_embedding_model, used_candidates
from workbench.types import QuerySet

RESAMPLES = 2000  # bootstrap resamples of the tuning queries
HALVINGS = 50  # random halvings the split-half agreement averages over
MIN_QUERIES = 4  # fewer cannot be halved into two orders worth comparing


def robust_default(space: SearchSpace, name: str) -> tuple[PipelineConfig, str]:
    """Returns the robust default of a study's space and how to call it: RRF (k 60) of BM25 and the
    space's first embedding model at default settings, whole documents, no re-ranker; BM25 alone
    when the space has no dense retriever."""
    has_dense = any(isinstance(candidate, DenseCandidate) for candidate in used_candidates(space))
    if not has_dense:
        return PipelineConfig(name=name, retrievers=(BM25Config(),)), "BM25 alone at default settings"
    config = PipelineConfig(
        name=name,
        retrievers=(BM25Config(), DenseConfig(model=first_embedding_model(space))),
        fusion=FusionConfig(method="rrf"),
    )
    return config, "RRF of BM25 and dense at default settings"


def is_generated_split(corpus_dir: Path, split: str) -> bool:
    """True when ``split`` of the corpus folder ``corpus_dir`` holds generated questions: the folder's
    synthesis card names it, or it is called ``synthetic``."""
    from workbench.synthesis.writer import SYNTHETIC_SPLIT, read_card

    card = read_card(corpus_dir)
    return split == SYNTHETIC_SPLIT or (card is not None and card.get("split") == split)


@dataclass(frozen=True)
class GeneratedChoiceGuard:
    """How far the generated tuning questions back a study's choice, and whether it is kept."""

    queries: int  # generated tuning questions
    trials: int  # distinct finished trials compared
    chosen_trial: int
    chosen_mean: float  # the study metric on the tuning questions
    agreement: float | None  # split-half Kendall tau of the trials' order; None with fewer than 3 trials
    runner_up_trial: int | None  # None when no other trial finished
    p_beats_runner_up: float | None
    default_config: PipelineConfig
    default_label: str  # "RRF of BM25 and dense at default settings"
    default_mean: float
    p_beats_default: float
    chosen_is_default: bool
    min_agreement: float
    clearly_better: float
    metric: str

    @property
    def reliable(self) -> bool:
        """True when the generated questions rank the trials alike on both halves (or the guard is off)."""
        if self.switched_off:
            return True
        return self.agreement is not None and self.agreement >= self.min_agreement

    @property
    def switched_off(self) -> bool:
        return self.min_agreement <= -1.0

    @property
    def clearly_beats_default(self) -> bool:
        return self.p_beats_default >= self.clearly_better

    @property
    def keeps_choice(self) -> bool:
        """True when the chosen trial is exported; False when the robust default is, instead."""
        if self.chosen_is_default or self.switched_off:
            return True
        return self.reliable and self.clearly_beats_default

    def figures(self) -> str:
        """The guard's numbers in one clause."""
        agreement = (
            f"split-half agreement of the {self.trials} trials' order tau {self.agreement:.2f} "
            f"(needed {self.min_agreement:.2f})"
            if self.agreement is not None
            else f"no split-half agreement ({self.trials} trials and {self.queries} questions; 3 and {MIN_QUERIES} needed)"
        )
        runner_up = (
            f"P(beats runner-up trial {self.runner_up_trial}) {self.p_beats_runner_up:.2f}, "
            if self.p_beats_runner_up is not None
            else ""
        )
        return (
            f"on {self.queries} generated questions: {agreement}; {runner_up}P(beats the robust default) "
            f"{self.p_beats_default:.2f} ({self.metric} {self.chosen_mean:.4f} against {self.default_mean:.4f})"
        )

    def reason(self) -> str:
        """Why the guard keeps the choice or exports the robust default, with its figures."""
        if self.chosen_is_default:
            return f"the chosen trial is the robust default ({self.default_label}) itself"
        if self.switched_off:
            return f"the guard is switched off (min_agreement -1), {self.figures()}"
        if self.keeps_choice:
            return f"the generated questions rank the trials reliably and it clearly beats the robust default, {self.figures()}"
        default = f"the robust default ({self.default_label})"
        if not self.reliable and self.clearly_beats_default:
            why = f"it clearly beats {default} on the generated questions, but they do not rank the trials reliably"
        elif not self.reliable:
            why = f"the generated questions do not rank the trials reliably and the choice does not clearly beat {default}"
        else:
            why = f"the generated questions rank the trials reliably, but the choice does not clearly beat {default}"
        return f"{why}, {self.figures()}"

    def to_dict(self) -> dict[str, Any]:
        """The guard as plain data for the TOML provenance and JSON."""
        data = {
            "queries": self.queries,
            "trials": self.trials,
            "chosen_trial": self.chosen_trial,
            "chosen_mean": self.chosen_mean,
            "split_half_agreement": self.agreement,
            "runner_up_trial": self.runner_up_trial,
            "p_beats_runner_up": self.p_beats_runner_up,
            "robust_default": self.default_label,
            "robust_default_mean": self.default_mean,
            "p_beats_robust_default": self.p_beats_default,
            "min_agreement": self.min_agreement,
            "clearly_better": self.clearly_better,
            "keeps_choice": self.keeps_choice,
            "reason": self.reason(),
        }
        return {key: value for key, value in data.items() if value is not None}  # TOML has no null


def _tune_scores(trial, config: PipelineConfig, tune: QuerySet, resources: Resources, metric: str) -> dict[str, float]:
    """The trial's recorded per-query scores; a trial recorded before they were is scored again."""
    recorded = trial.user_attrs.get(TUNE_SCORES_ATTR) if trial is not None else None
    if recorded is not None:
        return dict(recorded)
    run = Pipeline(config, resources).search(tune.queries).run
    return evaluate(run, tune.qrels, (metric,)).per_query[metric]


def guard_generated_choice(
    study, trial, config: StudyConfig, tune: QuerySet, resources: Resources
) -> GeneratedChoiceGuard:
    """Returns how far the tuning questions back ``trial``, the chosen trial of ``study`` (Optuna), against
    its other finished trials and the robust default (run on the tuning questions unless a trial ran it)."""
    import optuna

    metric = config.metric
    finished = [
        t
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if DUPLICATE_ATTR not in t.user_attrs
    ]
    if trial.number not in {t.number for t in finished}:
        finished.append(trial)
    configs = {t.number: trial_config(t) for t in finished}
    scores = {t.number: _tune_scores(t, configs[t.number], tune, resources, metric) for t in finished}
    default, label = robust_default(config.space, f"{config.name}-robust-default")
    default_trial = next((t for t in finished if same_pipeline(configs[t.number], default)), None)
    default_scores = scores[default_trial.number] if default_trial else _tune_scores(None, default, tune, resources, metric)
    chosen = scores[trial.number]
    others = sorted(
        (t for t in finished if t.number != trial.number and not same_pipeline(configs[t.number], configs[trial.number])),
        key=lambda t: (-t.values[0], t.number),
    )
    runner_up = others[0] if others else None
    distinct = [trial, *others]
    return GeneratedChoiceGuard(
        queries=len(chosen),
        trials=len(distinct),
        chosen_trial=trial.number,
        chosen_mean=sum(chosen.values()) / len(chosen),
        agreement=(
            split_half_agreement([scores[t.number] for t in distinct], HALVINGS, config.seed)
            if len(distinct) >= 3 and len(chosen) >= MIN_QUERIES
            else None
        ),
        runner_up_trial=runner_up.number if runner_up else None,
        p_beats_runner_up=(
            win_probability(chosen, scores[runner_up.number], RESAMPLES, config.seed) if runner_up else None
        ),
        default_config=default,
        default_label=label,
        default_mean=sum(default_scores.values()) / len(default_scores),
        p_beats_default=win_probability(chosen, default_scores, RESAMPLES, config.seed),
        chosen_is_default=same_pipeline(configs[trial.number], default),
        min_agreement=config.guard.min_agreement,
        clearly_better=config.guard.clearly_better,
        metric=metric,
    )
