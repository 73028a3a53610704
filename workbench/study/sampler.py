"""The sampler a study searches with: TPE or random, with repeats answered by a random draw."""

from __future__ import annotations

import optuna

from workbench.study.attributes import DUPLICATE_ATTR


class RandomAfterRepeat(optuna.samplers.BaseSampler):
    """Samples with ``base``, except the trial after one that repeated a tried configuration, which
    is drawn at random.

    A repeat fails unscored, so TPE learns nothing from it: in a small discrete region it liked
    (one retriever alone over a few chunkings and depths) it would propose the same points until
    the study gives up.
    """

    def __init__(self, base: optuna.samplers.BaseSampler, seed: int):
        self.base = base
        self.random = optuna.samplers.RandomSampler(seed=seed)
        self._after_repeat = False

    def _current(self) -> optuna.samplers.BaseSampler:
        return self.random if self._after_repeat else self.base

    def infer_relative_search_space(self, study, trial):
        return self._current().infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._current().sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._current().sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial) -> None:
        self._current().before_trial(study, trial)

    def after_trial(self, study, trial, state, values) -> None:
        self._current().after_trial(study, trial, state, values)
        self._after_repeat = DUPLICATE_ATTR in trial.user_attrs

    def reseed_rng(self) -> None:
        self.base.reseed_rng()
        self.random.reseed_rng()


def study_sampler(kind: str, seed: int) -> optuna.samplers.BaseSampler:
    """Returns the sampler of a study: ``"random"`` or ``"tpe"`` (constant liar: running trials
    count as bad, so parallel workers spread out; Optuna 5's default, stated here)."""
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return RandomAfterRepeat(optuna.samplers.TPESampler(seed=seed, constant_liar=True), seed)
