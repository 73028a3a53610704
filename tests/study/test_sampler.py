import optuna

from workbench.study.attributes import DUPLICATE_ATTR
from workbench.study.sampler import RandomAfterRepeat, study_sampler


def _distinct_finished(sampler, proposals: int) -> int:
    """Runs ``proposals`` trials of a space whose best region is one point; a repeated point fails
    unscored, as the study's objective does. Returns how many distinct points were scored."""
    seen: set = set()

    def objective(trial):
        branch = trial.suggest_categorical("branch", ["alone", "tuned"])
        x = 0 if branch == "alone" else trial.suggest_int("x", 1, 200)
        point = (branch, x)
        if point in seen:
            trial.set_user_attr(DUPLICATE_ATTR, 0)
            raise RuntimeError("repeat")
        seen.add(point)
        return 1.0 if branch == "alone" else x / 1000

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=proposals, catch=(RuntimeError,))
    return len(seen)


def test_a_repeated_proposal_is_followed_by_a_random_one():
    # TPE alone keeps proposing the one best point once it has seen it; here each repeat is
    # followed by a random draw, which finds a new point whenever it takes the other branch.
    tpe_alone = _distinct_finished(optuna.samplers.TPESampler(seed=1, constant_liar=True), 60)
    with_fallback = _distinct_finished(study_sampler("tpe", 1), 60)
    assert with_fallback >= 2 * tpe_alone


def test_the_study_sampler_is_reproducible():
    first = _distinct_finished(RandomAfterRepeat(optuna.samplers.TPESampler(seed=5), 5), 30)
    second = _distinct_finished(RandomAfterRepeat(optuna.samplers.TPESampler(seed=5), 5), 30)
    assert first == second
