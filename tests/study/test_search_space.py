"""Define-by-run search space: a trial is asked only for the parameters that apply to it."""

from __future__ import annotations

import re

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import FixedTrial

from workbench.errors import ConfigError
from workbench.retrieval.config import DEFAULT_MODEL
from workbench.study.search_space import FloatRange, IntRange, SearchSpace
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

# Written in the two-stage layout ([space.bm25], [space.dense], fusion.method among four): it is
# translated into [[space.retrievers]] candidates named bm25 and dense when it validates.
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
ALWAYS = {"retrievers", "chunking.kind", "first_stage_depth", "rerank.model"}
BM25 = {"retrievers.bm25.k1": 1.2, "retrievers.bm25.b": 0.5}


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


def whole_docs(**extra) -> dict:
    return {"chunking.kind": "none", "first_stage_depth": 50, "rerank.model": "none", **extra}


def test_the_two_stage_layout_is_translated_into_candidates_and_combinations():
    bm25, dense = WIDE_SPACE.retrievers
    assert (bm25.kind, bm25.name, bm25.k1, bm25.b) == ("bm25", "bm25", FloatRange(low=0.5, high=2.0), [0.5, 0.75, 0.9])
    assert (dense.kind, dense.name, dense.model) == ("dense", "dense", [DEFAULT_MODEL, OTHER_MODEL])
    assert WIDE_SPACE.combinations == [["bm25", "dense"], ["bm25"], ["dense"]]
    assert WIDE_SPACE.fusion_methods == ["convex", "rrf"]
    assert WIDE_SPACE.bm25 is None and WIDE_SPACE.dense is None
    only_bm25 = SearchSpace.model_validate({"fusion": {"method": "bm25"}, "bm25": {"k1": 0.9}})
    assert only_bm25.combinations == [["bm25"]] and only_bm25.retrievers[0].k1 == 0.9
    # the list layout written out is the same space
    listed = SearchSpace.model_validate(
        {
            "retrievers": [
                {"kind": "bm25", "k1": {"low": 0.5, "high": 2.0}, "b": [0.5, 0.75, 0.9]},
                {"kind": "dense", "model": [DEFAULT_MODEL, OTHER_MODEL]},
            ],
            "combinations": [["bm25", "dense"], ["bm25"], ["dense"]],
            "fusion": {"method": ["convex", "rrf"], "normalization": ["minmax", "zscore"], "rrf_k": {"low": 5, "high": 100}},
            **{key: getattr(WIDE_SPACE, key) for key in ("first_stage_depth", "chunking", "rerank")},
        }
    )
    assert listed.model_dump() == WIDE_SPACE.model_dump()  # they differ only in the keys errors name
    assert [point.params for point in space_points(listed)] == [point.params for point in space_points(WIDE_SPACE)]


def test_a_translated_space_samples_as_the_same_space_written_as_a_list():
    """Same seed, same points: translation changes the parameter names of the two-stage layout, nothing else."""
    listed = SearchSpace.model_validate(
        {"retrievers": [{"kind": "bm25", "k1": {"low": 0.5, "high": 2.0}}, {"kind": "dense"}], "fusion": {"method": "rrf"}}
    )
    translated = SearchSpace.model_validate({"bm25": {"k1": {"low": 0.5, "high": 2.0}}, "fusion": {"method": ["rrf", "bm25", "dense"]}})
    assert translated.combinations == [["bm25", "dense"], ["bm25"], ["dense"]]
    sampled = []
    for space in (listed.model_copy(update={"combinations": translated.combinations}), translated):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=3), direction="maximize")
        for index in range(12):
            trial = study.ask()
            suggest_pipeline(trial, space, "t")
            study.tell(trial, float(index % 5))
        sampled.append([trial.params for trial in study.trials])
    assert sampled[0] == sampled[1]


def test_bm25_only_asks_for_bm25_parameters_and_nothing_dense():
    params = whole_docs(retrievers="bm25", **BM25)

    config, asked = suggest_fixed(params)  # FixedTrial raises if asked for anything not given

    assert asked == params  # and every given parameter was asked
    assert kinds(config) == ["bm25"]
    assert (stage(config, "bm25").k1, stage(config, "bm25").b) == (1.2, 0.5)


def test_dense_only_asks_for_the_model_and_nothing_lexical():
    params = whole_docs(**{"retrievers": "dense", "retrievers.dense.model": OTHER_MODEL})

    config, asked = suggest_fixed(params)

    assert asked == params
    assert kinds(config) == ["dense"]
    assert stage(config, "dense").model == OTHER_MODEL


def test_convex_asks_a_weight_per_retriever_normalization_and_both_retrievers_settings():
    params = whole_docs(
        **{
            "retrievers": "bm25+dense",
            "retrievers.bm25.k1": 0.9,
            "retrievers.bm25.b": 0.75,
            "retrievers.dense.model": DEFAULT_MODEL,
            "fusion.method": "convex",
            "fusion.weight.bm25": 0.6,
            "fusion.weight.dense": 0.2,
            "fusion.normalization": "zscore",
        }
    )

    config, asked = suggest_fixed(params)

    assert asked == params
    assert kinds(config) == ["bm25", "dense"] and config.fusion.method == "convex"
    assert config.fusion_weights == pytest.approx((0.75, 0.25))
    assert config.fusion.normalization == "zscore"
    assert stage(config, "bm25").k1 == 0.9


def test_rrf_asks_k_but_no_weights():
    params = whole_docs(
        **{"retrievers": "bm25+dense", **BM25, "retrievers.dense.model": DEFAULT_MODEL, "fusion.method": "rrf", "fusion.rrf_k": 17}
    )

    config, asked = suggest_fixed(params)

    assert asked == params
    assert config.fusion.rrf_k == 17


def test_a_reranker_asks_its_depth_and_weight_and_no_reranker_never_does():
    base = {"retrievers": "bm25", **BM25, "chunking.kind": "none", "first_stage_depth": 100}

    with_reranker, asked = suggest_fixed({**base, "rerank.model": RERANKER, "rerank.depth": 20, "rerank.weight": 0.4})
    assert {"rerank.depth", "rerank.weight"} <= asked.keys()
    assert with_reranker.rerank.model == RERANKER and with_reranker.rerank.depth == 20
    assert with_reranker.rerank.weight == 0.4

    without, asked = suggest_fixed({**base, "rerank.model": "none"})
    assert not {"rerank.depth", "rerank.weight"} & asked.keys()
    assert not without.rerank.enabled


def test_whole_documents_never_ask_chunk_size_or_overlap():
    config, asked = suggest_fixed(whole_docs(retrievers="bm25", **BM25))

    assert not {"chunking.chunk_size", "chunking.chunk_overlap_fraction"} & asked.keys()
    assert config.chunking.kind == "none"


@pytest.mark.parametrize(
    ("size", "fraction", "overlap"), [(512, 0.25, 128), (384, 0.1, 38), (128, 0.0, 0), (1024, 0.499, 510)]
)
def test_an_overlap_fraction_becomes_an_integer_overlap_in_characters(size, fraction, overlap):
    params = {
        "retrievers": "bm25",
        **BM25,
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
            "fusion": {"method": "convex", "normalization": "zscore"},
            "bm25": {"k1": 1.1, "b": [0.6]},
            "rerank": {"model": ["none"], "depth": 30},
        }
    )

    config, asked = suggest_fixed({"fusion.weight.bm25": 0.5, "fusion.weight.dense": 0.5}, space)

    assert asked.keys() == {"fusion.weight.bm25", "fusion.weight.dense"}  # weights are always sampled
    assert config.fusion.method == "convex"
    assert config.fusion.normalization == "zscore"
    assert stage(config, "dense").model == OTHER_MODEL
    assert (stage(config, "bm25").k1, stage(config, "bm25").b) == (1.1, 0.6)
    assert (config.chunking.kind, config.chunking.chunk_size, config.chunking.chunk_overlap) == ("recursive", 300, 30)
    assert config.first_stage_depth == 80
    assert not config.rerank.enabled


def test_the_spaces_ranges_and_choices_become_optuna_distributions():
    trial = FixedTrial(whole_docs(retrievers="bm25", **BM25))
    suggest_pipeline(trial, WIDE_SPACE, "t")

    assert trial.distributions["retrievers.bm25.k1"] == FloatDistribution(0.5, 2.0)
    assert trial.distributions["retrievers.bm25.b"] == CategoricalDistribution([0.5, 0.75, 0.9])
    assert trial.distributions["first_stage_depth"] == CategoricalDistribution([50, 100])


def test_a_real_study_only_records_parameters_that_apply():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=7), direction="maximize")
    configs = {}
    for _ in range(60):
        trial = study.ask()
        configs[trial.number] = suggest_pipeline(trial, WIDE_SPACE, f"t{trial.number}")
        study.tell(trial, 0.0)

    seen = set()
    for trial in study.trials:
        config, params = configs[trial.number], trial.params
        used = "+".join(kinds(config))
        method = config.fusion.method if len(config.retrievers) > 1 else None
        seen.add((used, method))
        assert params["retrievers"] == used
        assert ALWAYS <= params.keys()
        assert ("fusion.method" in params) == (len(config.retrievers) > 1)
        assert ("fusion.weight.bm25" in params) == ("fusion.normalization" in params) == (method == "convex")
        assert ("fusion.rrf_k" in params) == (method == "rrf")
        assert ("retrievers.dense.model" in params) == ("dense" in kinds(config))
        assert ("retrievers.bm25.k1" in params) == ("retrievers.bm25.b" in params) == ("bm25" in kinds(config))
        chunked = config.chunking.kind != "none"
        assert ("chunking.chunk_size" in params) == ("chunking.chunk_overlap_fraction" in params) == chunked
        assert ("rerank.depth" in params) == ("rerank.weight" in params) == config.rerank.enabled
        if method == "rrf":
            assert trial.distributions["fusion.rrf_k"] == IntDistribution(5, 100)
        if chunked:
            size = params["chunking.chunk_size"]
            assert size % 128 == 0 and 128 <= size <= 1024
            assert config.chunking.chunk_overlap == int(size * params["chunking.chunk_overlap_fraction"])
    assert seen == {("bm25+dense", "convex"), ("bm25+dense", "rrf"), ("bm25", None), ("dense", None)}


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
        ("retrievers", "bm25+dense"), ("retrievers", "bm25"), ("retrievers", "dense"),
        ("fusion.method", "convex"), ("fusion.method", "rrf"),
        ("chunking.kind", "none"), ("chunking.kind", "recursive"), ("chunking.kind", "token"),
        ("chunking.chunk_size", 128), ("chunking.chunk_size", 1024),
        ("chunking.chunk_overlap_fraction", 0.0), ("chunking.chunk_overlap_fraction", 0.5),
        ("retrievers.dense.model", DEFAULT_MODEL), ("retrievers.dense.model", OTHER_MODEL),
        ("fusion.weight.bm25", 0.01), ("fusion.weight.bm25", 1.0), ("fusion.weight.dense", 0.01),
        ("fusion.weight.dense", 1.0), ("fusion.normalization", "minmax"),
        ("fusion.normalization", "zscore"), ("fusion.rrf_k", 5), ("fusion.rrf_k", 100),
        ("retrievers.bm25.k1", 0.5), ("retrievers.bm25.k1", 2.0), ("retrievers.bm25.b", 0.5),
        ("retrievers.bm25.b", 0.75), ("retrievers.bm25.b", 0.9),
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
    space = SearchSpace.model_validate({"dense": {"model": DEFAULT_MODEL, "backend": ["torch", "openvino"]}})
    params = {"retrievers": "dense", "retrievers.dense.backend": "openvino"}  # nothing else varies in this space
    config, asked = suggest_fixed(params, space)
    assert asked == params and stage(config, "dense").backend == "openvino"

    bm25_only = {"retrievers": "bm25"}
    assert suggest_fixed(bm25_only, space)[1] == bm25_only  # no backend asked without a dense stage
    backends = {stage(point.config, "dense").backend for point in space_points(space) if "dense" in kinds(point.config)}
    assert backends == {"torch", "openvino"}
    default = suggest_fixed(whole_docs(**{"retrievers": "dense", "retrievers.dense.model": DEFAULT_MODEL}))[0]
    assert stage(default, "dense").backend == "torch"  # a space that names no backend keeps torch
