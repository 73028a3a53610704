"""A static encoder distilled (model2vec) from the bundled MiniLM: it builds, loads by folder, ranks ADI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from workbench.cli import app
from workbench.evaluation.metrics import evaluate
from workbench.retrieval.config import DEFAULT_MODEL, DenseConfig, PipelineConfig
from workbench.retrieval.models import model_fingerprint
from workbench.retrieval.pipeline import Pipeline, Resources
from workbench.training.distill import CARD_NAME, METHOD

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.extra("distill")

WIDE = {"COLUMNS": "200"}


def distill(out: Path, *extra: str, state: Path | None = None):
    arguments = ["distill-encoder", DEFAULT_MODEL, "--out", str(out), *extra]
    arguments += ["--state-dir", str(state or out.parent / "state")]
    return CliRunner().invoke(app, arguments, env=WIDE)


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if path.name.startswith("."))


def test_a_non_empty_out_is_refused_before_any_work(tmp_path: Path):
    out = tmp_path / "static"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = distill(out)
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: {out}: already exists and is not an empty folder; choose another --out or remove it"
    ]
    assert sorted(path.name for path in out.iterdir()) == ["notes.txt"] and not leftovers(tmp_path)
    assert not (tmp_path / "state").exists(), "refused before the state folder was created"


def test_pca_dims_above_the_base_models_dimension_is_one_error_and_writes_nothing(tmp_path: Path):
    out = tmp_path / "static"
    result = distill(out, "--pca-dims", "1000")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "error: --pca-dims 1000: must lie in [2, 384], the base model's dimension"
    ]
    assert not out.exists() and not leftovers(tmp_path)


def ndcg_at_10(run, qrels) -> float:
    return evaluate(run, qrels, ["nDCG@10"]).means["nDCG@10"]


@pytest.mark.slow  # one pass of MiniLM over its 30,522 tokens: about a minute on 2 idle cores
def test_distilled_encoder_builds_loads_by_folder_and_ranks_adi(adi, tmp_path: Path):
    out = tmp_path / "static"
    result = distill(out, "--pca-dims", "128")
    assert result.exit_code == 0, result.output
    assert str(out.resolve()) in result.output and not leftovers(tmp_path)

    card = json.loads((out / CARD_NAME).read_text())
    assert card["method"] == METHOD and card["base_model"] == DEFAULT_MODEL
    assert card["base_model_fingerprint"] == model_fingerprint(DEFAULT_MODEL)
    assert card["pca_dims"] == 128 and card["dimensions"] == 128 and card["seconds"] > 0
    assert (out / "modules.json").is_file()

    config = PipelineConfig(retrievers=(DenseConfig(model=str(out)),), output_depth=100)
    queries = adi.judged_queries("test")
    qrels = adi.split_qrels("test")
    pipeline = Pipeline(config, Resources(adi, None))
    static_ndcg = ndcg_at_10(pipeline.search(queries).run, qrels)
    assert pipeline.resources.first_stage(config.chunking, config.retrievers[0]).vectors().shape == (82, 128)

    # A random ranking of the same documents, averaged over seeded shuffles, is the floor to clear.
    doc_ids = sorted(adi.documents)
    generator = random.Random(7)
    random_scores = []
    for _ in range(20):
        run = {}
        for query_id in queries:
            shuffled = generator.sample(doc_ids, len(doc_ids))
            run[query_id] = {doc_id: float(len(doc_ids) - rank) for rank, doc_id in enumerate(shuffled)}
        random_scores.append(ndcg_at_10(run, qrels))
    random_ndcg = sum(random_scores) / len(random_scores)
    assert static_ndcg > random_ndcg + 0.15, (static_ndcg, random_ndcg)

    again = distill(out)  # the folder now holds a model: refused, and left as it was
    assert again.exit_code == 2 and "already exists and is not an empty folder" in again.output
    assert json.loads((out / CARD_NAME).read_text()) == card
