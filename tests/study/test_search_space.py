"""Define-by-run search space: a trial is asked only for the parameters that apply to it."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial

from workbench.errors import ConfigError
from workbench.retrieval.config import DEFAULT_MODEL
from workbench.study.search_space import DenseSpace, FloatRange, IntRange, SearchSpace
from workbench.study.space import (
    BASELINES,
    baseline_config,
    first_choice,
    space_models,
    space_points,
    suggest_pipeline,
)

OTHER_MODEL = "org/other-encoder"  # never loaded: suggesting a config touches no model
RERANKER = "org/some-cross-encoder"

WIDE_SPACE = SearchSpace.model_validate(
    {
        "first_stage_depth": [50, 100],
        "chunking": {
            "kind": ["none", "recursive", "token"],
            "chunk_size": {"low": 128, "high": 1024, "step": 128},
            "chunk_overlap_fraction": {"low": 0.0, "high": 0.5},
        },
        "dense": {"model": [DEFAULT_MODEL, OTHER_MODEL]},
        "fusion": {
            "method": ["convex", "rrf", "bm25", "dense"],
            "alpha": {"low": 0.0, "high": 1.0},
            "normalization": ["minmax", "zscore"],
            "rrf_k": {"low": 5, "high": 100},
        },
        "bm25": {"k1": {"low": 0.5, "high": 2.0}, "b": [0.5, 0.75, 0.9]},
        "rerank": {"model": ["none", RERANKER], "depth": [10, 20, 50], "weight": {"low": 0.0, "high": 1.0}},
    }
)

# Parameters every trial of WIDE_SPACE is asked, whatever it picks.
ALWAYS = {"fusion.method", "chunking.kind", "first_stage_depth", "rerank.model"}


def suggest_fixed(params: dict, space: SearchSpace = WIDE_SPACE):
    """Suggests with a FixedTrial holding exactly ``params``; returns (config, params the trial was asked)."""
    trial = FixedTrial(params)
    config = suggest_pipeline(trial, space, "t")
    return config, trial.params


def kinds(config) -> list[str]:
    return [retriever.kind for retriever in config.retrievers]


def stage(config, kind: str):
    """The config's first stage of ``kind``."""
    return next(retriever for retriever in config.retrievers if retriever.kind == kind)


def method_of(config) -> str:
    """The space's ``fusion.method`` that gave ``config``: bm25 or dense for a single retriever."""
    return config.retrievers[0].kind if len(config.retrievers) == 1 else config.fusion.method


def alpha_of(config) -> float:
    """Dense's convex weight in a BM25 + dense hybrid: the space's alpha."""
    return config.fusion_weights[kinds(config).index("dense")]


def whole_docs(**extra) -> dict:
    return {"chunking.kind": "none", "first_stage_depth": 50, "rerank.model": "none", **extra}


def test_bm25_only_asks_for_bm25_parameters_and_nothing_dense():
    params = whole_docs(**{"fusion.method": "bm25", "bm25.k1": 1.2, "bm25.b": 0.5})

    config, asked = suggest_fixed(params)  # FixedTrial raises if asked for anything not given

    assert asked == params  # and every given parameter was asked
    assert kinds(config) == ["bm25"]
    assert (stage(config, "bm25").k1, stage(config, "bm25").b) == (1.2, 0.5)
    assert ("bm25" in kinds(config)) and "dense" not in kinds(config)


def test_dense_only_asks_for_the_model_and_nothing_lexical():
    params = whole_docs(**{"fusion.method": "dense", "dense.model": OTHER_MODEL})

    config, asked = suggest_fixed(params)

    assert asked == params
    assert kinds(config) == ["dense"]
    assert stage(config, "dense").model == OTHER_MODEL


def test_convex_asks_alpha_normalization_and_both_retrievers():
    params = whole_docs(
        **{
            "fusion.method": "convex",
            "fusion.alpha": 0.3,
            "fusion.normalization": "zscore",
            "dense.model": DEFAULT_MODEL,
            "bm25.k1": 0.9,
            "bm25.b": 0.75,
        }
    )

    config, asked = suggest_fixed(params)

    assert asked == params
    assert config.fusion.method == "convex"
    assert alpha_of(config) == 0.3
    assert config.fusion.normalization == "zscore"
    assert stage(config, "bm25").k1 == 0.9


def test_convex_at_alpha_one_does_not_ask_bm25_parameters():
    params = whole_docs(
        **{
            "fusion.method": "convex",
            "fusion.alpha": 1.0,
            "fusion.normalization": "minmax",
            "dense.model": DEFAULT_MODEL,
        }
    )

    config, asked = suggest_fixed(params)

    assert asked == params
    assert "bm25" not in kinds(config)


def test_convex_at_alpha_zero_does_not_ask_the_dense_model():
    params = whole_docs(
        **{
            "fusion.method": "convex",
            "fusion.alpha": 0.0,
            "fusion.normalization": "minmax",
            "bm25.k1": 1.0,
            "bm25.b": 0.5,
        }
    )

    config, asked = suggest_fixed(params)

    assert asked == params
    assert "dense" not in kinds(config)


def test_rrf_asks_k_but_not_alpha():
    params = whole_docs(
        **{"fusion.method": "rrf", "fusion.rrf_k": 17, "dense.model": DEFAULT_MODEL, "bm25.k1": 1.5, "bm25.b": 0.9}
    )

    config, asked = suggest_fixed(params)

    assert asked == params
    assert config.fusion.rrf_k == 17


def test_a_reranker_asks_its_depth_and_weight_and_no_reranker_never_does():
    base = {"fusion.method": "bm25", "bm25.k1": 1.2, "bm25.b": 0.5, "chunking.kind": "none", "first_stage_depth": 100}

    with_reranker, asked = suggest_fixed({**base, "rerank.model": RERANKER, "rerank.depth": 20, "rerank.weight": 0.4})
    assert {"rerank.depth", "rerank.weight"} <= asked.keys()
    assert with_reranker.rerank.model == RERANKER and with_reranker.rerank.depth == 20
    assert with_reranker.rerank.weight == 0.4

    without, asked = suggest_fixed({**base, "rerank.model": "none"})
    assert not {"rerank.depth", "rerank.weight"} & asked.keys()
    assert not without.rerank.enabled


def test_whole_documents_never_ask_chunk_size_or_overlap():
    config, asked = suggest_fixed(whole_docs(**{"fusion.method": "bm25", "bm25.k1": 1.2, "bm25.b": 0.5}))

    assert not {"chunking.chunk_size", "chunking.chunk_overlap_fraction"} & asked.keys()
    assert config.chunking.kind == "none"


@pytest.mark.parametrize(
    ("size", "fraction", "overlap"), [(512, 0.25, 128), (384, 0.1, 38), (128, 0.0, 0), (1024, 0.499, 510)]
)
def test_an_overlap_fraction_becomes_an_integer_overlap_in_characters(size, fraction, overlap):
    params = {
        "fusion.method": "bm25",
        "bm25.k1": 1.2,
        "bm25.b": 0.5,
        "chunking.kind": "recursive",
        "chunking.chunk_size": size,
        "chunking.chunk_overlap_fraction": fraction,
        "first_stage_depth": 50,
        "rerank.model": "none",
    }

    config, asked = suggest_fixed(params)

    assert asked == params
    assert config.chunking.chunk_size == size
    assert isinstance(config.chunking.chunk_overlap, int)
    assert config.chunking.chunk_overlap == overlap
    assert config.chunking.chunk_overlap < config.chunking.chunk_size


def test_fixed_values_and_single_choices_are_used_without_sampling():
    space = SearchSpace.model_validate(
        {
            "first_stage_depth": 80,
            "chunking": {"kind": ["recursive"], "chunk_size": 300, "chunk_overlap_fraction": 0.1},
            "dense": {"model": OTHER_MODEL},
            "fusion": {"method": "convex", "alpha": [0.4], "normalization": "zscore"},
            "bm25": {"k1": 1.1, "b": [0.6]},
            "rerank": {"model": ["none"], "depth": 30},
        }
    )

    config, asked = suggest_fixed({}, space)

    assert asked == {}
    assert config.fusion.method == "convex"
    assert alpha_of(config) == 0.4
    assert config.fusion.normalization == "zscore"
    assert stage(config, "dense").model == OTHER_MODEL
    assert (stage(config, "bm25").k1, stage(config, "bm25").b) == (1.1, 0.6)
    assert (config.chunking.kind, config.chunking.chunk_size, config.chunking.chunk_overlap) == ("recursive", 300, 30)
    assert config.first_stage_depth == 80
    assert not config.rerank.enabled


def test_the_spaces_ranges_and_choices_become_optuna_distributions():
    trial = FixedTrial(whole_docs(**{"fusion.method": "bm25", "bm25.k1": 1.0, "bm25.b": 0.5}))
    suggest_pipeline(trial, WIDE_SPACE, "t")

    assert trial.distributions["bm25.k1"] == FloatDistribution(0.5, 2.0)
    assert trial.distributions["bm25.b"] == CategoricalDistribution([0.5, 0.75, 0.9])
    assert trial.distributions["first_stage_depth"] == CategoricalDistribution([50, 100])


def test_a_real_study_only_records_parameters_that_apply():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7), direction="maximize")
    configs = {}
    for _ in range(60):
        trial = study.ask()
        configs[trial.number] = suggest_pipeline(trial, WIDE_SPACE, f"t{trial.number}")
        study.tell(trial, 0.0)

    methods_seen = set()
    for trial in study.trials:
        config, params = configs[trial.number], trial.params
        method = method_of(config)
        methods_seen.add(method)
        assert params["fusion.method"] == method
        assert ALWAYS <= params.keys()
        assert ("fusion.alpha" in params) == ("fusion.normalization" in params) == (method == "convex")
        assert ("fusion.rrf_k" in params) == (method == "rrf")
        assert ("dense.model" in params) == ("dense" in kinds(config))
        assert ("bm25.k1" in params) == ("bm25.b" in params) == ("bm25" in kinds(config))
        chunked = config.chunking.kind != "none"
        assert ("chunking.chunk_size" in params) == ("chunking.chunk_overlap_fraction" in params) == chunked
        assert ("rerank.depth" in params) == ("rerank.weight" in params) == config.rerank.enabled
        if method == "convex":
            assert params["fusion.alpha"] == alpha_of(config)
            assert trial.distributions["fusion.alpha"] == FloatDistribution(0.0, 1.0)
        if method == "rrf":
            assert trial.distributions["fusion.rrf_k"] == IntDistribution(5, 100)
        if chunked:
            size = params["chunking.chunk_size"]
            assert size % 128 == 0 and 128 <= size <= 1024
            assert config.chunking.chunk_overlap == int(size * params["chunking.chunk_overlap_fraction"])
    assert methods_seen == {"convex", "rrf", "bm25", "dense"}


@pytest.mark.parametrize("baseline", BASELINES)
def test_a_baseline_is_one_retriever_on_whole_documents_without_reranker(baseline):
    config = baseline_config(baseline, WIDE_SPACE, f"{baseline}-baseline")

    assert kinds(config) == [baseline]
    assert config.chunking.kind == "none"
    assert not config.rerank.enabled
    assert config.name == f"{baseline}-baseline"
    if baseline == "bm25":
        assert ("bm25" in kinds(config)) and "dense" not in kinds(config)
    else:
        assert ("dense" in kinds(config)) and "bm25" not in kinds(config)
        assert stage(config, "dense").model == DEFAULT_MODEL  # the space's first embedding model


def test_the_dense_baseline_uses_the_spaces_first_model_even_when_it_is_not_the_default():
    space = SearchSpace.model_validate({"dense": {"model": [OTHER_MODEL, DEFAULT_MODEL]}})

    assert stage(baseline_config("dense", space, "b"), "dense").model == OTHER_MODEL


def test_an_unknown_baseline_is_refused():
    with pytest.raises(ValueError, match="splade"):
        baseline_config("splade", WIDE_SPACE, "b")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [(7, 7), ([3, 1], 3), (IntRange(low=5, high=9), 5), (FloatRange(low=0.2, high=0.4), 0.2), ("x", "x")],
)
def test_first_choice(spec, expected):
    assert first_choice(spec) == expected


# --- several first stages: [[space.retrievers]] -----------------------------------------------------

TUNED = "/models/tuned-encoder"  # never loaded: suggesting a config touches no model

LIST_SPACE = SearchSpace.model_validate(
    {
        "retrievers": [
            {"kind": "bm25", "k1": {"low": 0.5, "high": 2.0}},
            {"kind": "dense", "name": "minilm", "model": DEFAULT_MODEL},
            {"kind": "dense", "name": "tuned", "model": [TUNED, OTHER_MODEL]},
        ],
        "fusion": {"method": ["convex", "rrf"], "rrf_k": {"low": 5, "high": 100}},
        "chunking": {"kind": ["none", "token"], "chunk_size": 256},
    }
)


def test_a_combination_asks_only_for_its_own_retrievers_settings():
    params = whole_docs(
        **{
            "retrievers": "bm25+tuned",
            "retrievers.bm25.k1": 0.8,
            "retrievers.tuned.model": OTHER_MODEL,
            "fusion.method": "convex",
            "fusion.weight.bm25": 0.2,
            "fusion.weight.tuned": 0.6,
        }
    )
    for fixed in ("first_stage_depth", "rerank.model"):  # one value in this space: never asked
        del params[fixed]

    config, asked = suggest_fixed(params, LIST_SPACE)

    assert asked == params
    assert [retriever.name for retriever in config.retrievers] == ["bm25", "tuned"]
    assert stage(config, "bm25").k1 == 0.8 and stage(config, "dense").model == OTHER_MODEL
    assert config.fusion.weights == pytest.approx((0.25, 0.75))  # raw weights normalised to sum 1


def test_a_single_retriever_asks_no_fusion_parameter():
    params = {"retrievers": "minilm", "chunking.kind": "none"}
    config, asked = suggest_fixed(params, LIST_SPACE)
    assert asked == params
    assert kinds(config) == ["dense"] and config.retrievers[0].name == "minilm"


def test_token_chunks_follow_the_first_dense_retriever_in_use():
    params = {
        "retrievers": "bm25+tuned",
        "retrievers.bm25.k1": 1.0,
        "retrievers.tuned.model": TUNED,
        "fusion.method": "rrf",
        "fusion.rrf_k": 10,
        "chunking.kind": "token",
        "chunking.chunk_overlap_fraction": 0.0,
        "rerank.model": "none",
    }
    config, _ = suggest_fixed(params, LIST_SPACE)
    assert config.chunking.tokenizer == TUNED


def test_a_real_study_over_three_first_stages_visits_every_combination():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=3), direction="maximize")
    combinations = set()
    for _ in range(80):
        trial = study.ask()
        config = suggest_pipeline(trial, LIST_SPACE, "t")
        names = [retriever.name for retriever in config.retrievers]
        combinations.add("+".join(names))
        assert trial.params["retrievers"] == "+".join(names)
        assert ("fusion.method" in trial.params) == (len(names) > 1)
        if config.fusion.method == "convex" and len(names) > 1:
            assert sum(config.fusion.weights) == pytest.approx(1.0)
        study.tell(trial, 0.0)
    assert len(combinations) == 7  # every non-empty subset of three


def test_combinations_restrict_what_a_trial_may_use():
    space = LIST_SPACE.model_copy(update={"combinations": [["bm25", "minilm"], ["bm25", "minilm", "tuned"]]})
    trial = FixedTrial({})
    with pytest.raises(ValueError):
        suggest_pipeline(trial, space, "t")  # FixedTrial has no value for the categorical "retrievers"
    distribution = None
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    trial = study.ask()
    suggest_pipeline(trial, space, "t")
    distribution = trial.distributions["retrievers"]
    assert distribution == CategoricalDistribution(["bm25+minilm", "bm25+minilm+tuned"])


# --- every value the space can produce, checked up front (space_points) -----------------------


def test_space_points_visit_every_edge_of_every_parameter_where_it_applies():
    points = space_points(WIDE_SPACE)

    seen = {(name, value) for point in points for name, value in point.params.items()}
    expected = {
        ("fusion.method", method) for method in ("convex", "rrf", "bm25", "dense")
    } | {
        ("chunking.kind", "none"), ("chunking.kind", "recursive"), ("chunking.kind", "token"),
        ("chunking.chunk_size", 128), ("chunking.chunk_size", 1024),
        ("chunking.chunk_overlap_fraction", 0.0), ("chunking.chunk_overlap_fraction", 0.5),
        ("dense.model", DEFAULT_MODEL), ("dense.model", OTHER_MODEL),
        ("fusion.alpha", 0.0), ("fusion.alpha", 1.0), ("fusion.normalization", "minmax"),
        ("fusion.normalization", "zscore"), ("fusion.rrf_k", 5), ("fusion.rrf_k", 100),
        ("bm25.k1", 0.5), ("bm25.k1", 2.0), ("bm25.b", 0.5), ("bm25.b", 0.75), ("bm25.b", 0.9),
        ("rerank.model", "none"), ("rerank.model", RERANKER), ("rerank.depth", 10), ("rerank.depth", 20),
        ("rerank.depth", 50), ("rerank.weight", 0.0), ("rerank.weight", 1.0),
        ("first_stage_depth", 50), ("first_stage_depth", 100),
    }  # fmt: skip
    assert seen == expected
    for point in points[:-2]:  # each is the config a trial with these very parameters gets
        assert suggest_fixed(point.params)[0] == point.config.model_copy(update={"name": "t"})
    assert [[r.kind for r in point.config.retrievers] for point in points[-2:]] == [[name] for name in BASELINES]


def test_a_step_range_is_checked_at_its_last_reachable_value():
    space = SearchSpace.model_validate({"first_stage_depth": {"low": 10, "high": 100_015, "step": 10}})

    with pytest.raises(ConfigError, match=r"^space\.first_stage_depth: 100010 gives an invalid pipeline config"):
        space_points(space)
    # here 100,000 (allowed) is the last value the range reaches; 100,009 is never tried
    assert space_points(SearchSpace.model_validate({"first_stage_depth": {"low": 10, "high": 100_009, "step": 10}}))


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"retrievers": [{"kind": "bm25"}], "bm25": {"k1": 1.0}}, "[space.bm25] and [[space.retrievers]]"),
        ({"retrievers": [{"kind": "bm25"}], "fusion": {"alpha": 0.5}}, "fusion.alpha"),
        ({"retrievers": [{"kind": "bm25"}], "fusion": {"method": ["bm25", "convex"]}}, "list combinations"),
        ({"retrievers": [{"kind": "dense"}, {"kind": "dense", "model": TUNED}]}, "names must be unique"),
        ({"retrievers": [{"kind": "bm25"}], "combinations": [["dense"]]}, "not among the retrievers"),
        ({"combinations": [["bm25"]]}, "needs a [[space.retrievers]]"),
    ],
)
def test_retrievers_space_mistakes_are_named(space, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        SearchSpace.model_validate(space)


def test_baselines_and_models_of_a_retrievers_space():
    assert stage(baseline_config("dense", LIST_SPACE, "b"), "dense").model == DEFAULT_MODEL
    assert kinds(baseline_config("bm25", LIST_SPACE, "b")) == ["bm25"]
    assert space_models(LIST_SPACE) == {
        "space.retrievers[1].model": [DEFAULT_MODEL],
        "space.retrievers[2].model": [TUNED, OTHER_MODEL],
        "space.rerank.model": [],
    }


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"chunking": {"kind": ["none", "recursive"], "chunk_size": 8}}, r"^space\.chunking\.chunk_size: 8 gives"),
        ({"fusion": {"method": "convex", "alpha": [0.5]}, "bm25": {"b": [0.5, 1.5]}}, r"^space\.bm25\.b: 1\.5 gives"),
        ({"fusion": {"method": "rrf", "rrf_k": {"low": 0, "high": 9, "log": True}}}, r"^space\.fusion\.rrf_k: .*log"),
        ({"rerank": {"model": ["none", RERANKER], "depth": {"low": 0, "high": 5}}}, r"^space\.rerank\.depth: 0 gives"),
    ],
)
def test_the_first_value_no_pipeline_accepts_is_named_by_its_key(space, message):
    with pytest.raises(ConfigError, match=message):
        space_points(SearchSpace.model_validate(space))


def test_a_value_that_never_reaches_a_config_is_not_checked():
    # chunk_size applies only to chunked documents, and this space has none
    assert space_points(SearchSpace.model_validate({"chunking": {"kind": "none", "chunk_size": 8}}))


def test_the_encoder_backend_is_a_choice_asked_only_of_dense_trials():
    space = WIDE_SPACE.model_copy(update={"dense": DenseSpace(model=DEFAULT_MODEL, backend=["torch", "openvino"])})
    params = whole_docs(**{"fusion.method": "dense", "dense.backend": "openvino"})
    config, asked = suggest_fixed(params, space)
    assert asked == params and stage(config, "dense").backend == "openvino"

    bm25_only = whole_docs(**{"fusion.method": "bm25", "bm25.k1": 1.0, "bm25.b": 0.5})
    assert suggest_fixed(bm25_only, space)[1] == bm25_only  # no backend asked without a dense stage
    backends = {stage(point.config, "dense").backend for point in space_points(space) if "dense" in kinds(point.config)}
    assert backends == {"torch", "openvino"}
    default = suggest_fixed(whole_docs(**{"fusion.method": "dense", "dense.model": DEFAULT_MODEL}))[0]
    assert stage(default, "dense").backend == "torch"  # a space that names no backend keeps torch
