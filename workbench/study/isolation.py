"""Held-out isolation: models trained on the corpus must never have seen a study's held-out queries."""

from __future__ import annotations

import json
from pathlib import Path

from workbench.errors import StudyError
from workbench.retrieval.corpus import Corpus
from workbench.study.config import StudyConfig
from workbench.study.splits import StudySplits, study_splits
from workbench.training.encoder import CARD_NAME as ENCODER_CARD
from workbench.training.reranker import CARD_NAME as RERANKER_CARD

# The card each trainer writes beside its model, and the command that retrains it with a study's queries left out.
TRAINED_MODEL_CARDS = (
    (RERANKER_CARD, "re-ranker", "train-reranker"),
    (ENCODER_CARD, "encoder", "train-encoder"),
)


def check_trained_models_against_splits(models: list[str], corpus: Corpus, splits: StudySplits) -> list[str]:
    """Checks re-rankers and encoders trained by workbench (those with a card) against a study's splits.

    Raises ``StudyError`` when one was trained or validated on a held-out query of the same corpus:
    its held-out figures would be no test at all. Returns a warning for each one trained on tuning
    queries, whose tuning scores are then optimistic.
    """
    warnings = []
    for model in dict.fromkeys(models):
        for card_name, kind, command in TRAINED_MODEL_CARDS:
            card_path = Path(model).expanduser() / card_name
            if not card_path.is_file():
                continue
            try:
                card = json.loads(card_path.read_text())
            except (OSError, ValueError) as error:
                raise StudyError(f"{card_path}: unreadable {kind} card ({error})") from error
            if card.get("corpus_fingerprint") != corpus.fingerprint:
                continue
            trained_on = set(card.get("training_query_ids", []))
            seen = trained_on | set(card.get("validation_query_ids", []))  # validation picked the saved epoch
            if leaked := seen & splits.verdict_query_ids:
                raise StudyError(
                    f"{kind} {model} was trained or validated on {len(leaked)} of this study's held-out queries; "
                    f"retrain it with `workbench {command} ... --study STUDY.toml`, which leaves them out"
                )
            if overlap := trained_on & set(splits.tune.queries):
                warnings.append(
                    f"warning: {kind} {model} was trained on {len(overlap)} of the {len(splits.tune.queries)} "
                    "tuning queries, so its tuning scores are optimistic (the held-out verdict is not affected)"
                )
    return warnings


def queries_never_to_train_on(config: StudyConfig, study_file: Path, corpus: Corpus, split: str) -> set[str]:
    """Returns the study's held-out queries when ``corpus`` is the study's corpus (a model trained on
    ``split`` must leave them out); raises ``StudyError`` when ``split`` is the study's held-out split."""
    if config.heldout_split == split:
        raise StudyError(f"{study_file}: split '{split}' is this study's held-out split; it must never be trained on")
    if config.corpus.resolve() != corpus.path.resolve():
        return set()
    return set(study_splits(config, corpus).verdict_query_ids)  # with k folds: every query of the split
