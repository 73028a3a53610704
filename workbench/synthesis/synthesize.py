"""``workbench synthesize``: sample passages, ask a generator for a question each answers, filter, write.

Every answer is cached by (generator fingerprint, request), and the request holds the whole prompt,
passage included: an interrupted run loses at most the question being written, and the same
command picks up where it stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, model_validator

from workbench.errors import ConfigError, CorpusError
from workbench.files import check_new_folder
from workbench.progress import ProgressCallback
from workbench.provenance import code_version
from workbench.retrieval.cache import Cache
from workbench.retrieval.config import (
    DEFAULT_MODEL,
    FrozenModel,
    format_validation_error,
)
from workbench.retrieval.corpus import Corpus, has_judgements, load_corpus, load_documents
from workbench.retrieval.pipeline import bm25_and_dense_runs
from workbench.synthesis.filters import (
    Candidate,
    FilterOutcome,
    duplicate_filter,
    example_copy_filter,
    length_filter,
    passage_copy_filter,
    round_trip_filter,
)
from workbench.synthesis.generators import Generator, GeneratorSpec, open_generator
from workbench.synthesis.prompt import (
    Example,
    Prompt,
    built_in_examples,
    cut_passage,
    examples_for,
    read_question,
    real_examples,
)
from workbench.synthesis.writer import (
    SYNTHETIC_SPLIT,
    SyntheticQuery,
    check_outside_documents,
    write_synthetic_corpus,
)

GENERATION_STAGE = "querygen-1"  # bump when the way an answer is produced changes
MIN_PASSAGE_WORDS = 10  # shorter documents (titles, empty records) give nothing to ask about
DEFAULT_EXAMPLES_SPLIT = "train"
DROPPED_SHOWN = 5  # dropped questions each filter lists on the card, for a reader to judge it


class SynthesisSettings(FrozenModel):
    """How many questions, from which passages, and what the filters let through."""

    documents: int = Field(default=100, ge=1, le=10_000_000)
    per_document: int = Field(default=1, ge=1, le=20)
    seed: int = 42
    shots: int = Field(default=2, ge=1, le=6)
    examples_split: str | None = None  # None: "train" when the corpus has it, else the built-in examples
    passage_chars: int = Field(default=1000, ge=100, le=20_000)
    example_chars: int = Field(default=600, ge=100, le=5_000)
    min_words: int = Field(default=4, ge=1, le=1000)
    max_words: int = Field(default=40, ge=1, le=1000)
    max_example_overlap: float = Field(default=0.6, ge=0.0, le=1.0)
    max_copied_words: int = Field(default=8, ge=1, le=1000)
    round_trip_k: int = Field(default=0, ge=0, le=10_000)  # 0: no round-trip check
    copy_corpus: bool = False

    @model_validator(mode="after")
    def _lengths_ordered(self) -> SynthesisSettings:
        if self.min_words > self.max_words:
            raise ValueError(f"min_words ({self.min_words}) must not exceed max_words ({self.max_words})")
        return self


def synthesis_settings(**values: Any) -> SynthesisSettings:
    """Returns validated settings; raises ``ConfigError`` naming each bad option."""
    try:
        return SynthesisSettings(**values)
    except ValidationError as error:
        raise ConfigError(format_validation_error(error, "workbench synthesize")) from None


def load_source(path: Path) -> Corpus:
    """Returns the corpus questions are written from: a judged corpus folder (its real splits kept, its
    queries the prompt's examples) or documents alone (a ``corpus.jsonl``, its folder, a ``docs/``
    folder or a folder of ``.txt``/``.md`` files). Raises ``CorpusError`` naming the file and line."""
    return load_corpus(path) if has_judgements(path) else load_documents(path)


@dataclass(frozen=True)
class Passage:
    doc_id: str
    text: str


def sample_passages(corpus: Corpus, count: int, seed: int, max_chars: int) -> list[Passage]:
    """Returns ``count`` seeded documents (all there are, if fewer), each cut to its first ``max_chars`` characters;
    the documents of a smaller ``count`` are the first of a larger one's.

    Documents under ``MIN_PASSAGE_WORDS`` words are never drawn. Raises ``CorpusError`` when none is long enough.
    """
    eligible = [doc_id for doc_id, doc in corpus.documents.items() if len(doc.full_text.split()) >= MIN_PASSAGE_WORDS]
    if not eligible:
        raise CorpusError(f"{corpus.path}: no document has {MIN_PASSAGE_WORDS} words or more to ask about")
    # A seeded shuffle, then the first ``count``: asking for more documents later keeps these ones
    # (and their cached questions) and adds others.
    random.Random(seed).shuffle(eligible)
    return [Passage(doc_id, cut_passage(corpus.documents[doc_id].full_text, max_chars)) for doc_id in eligible[:count]]


def example_pool(corpus: Corpus, settings: SynthesisSettings) -> tuple[list[Example], str]:
    """Returns the few-shot examples and where they came from ("built-in" or "split <name>").

    Real queries are taken from ``settings.examples_split``, by default from ``train`` when the corpus
    has it; never from any other split unless named. Raises ``CorpusError`` for an unknown split or
    one with fewer judged queries than ``shots``.
    """
    split = settings.examples_split
    if split is None and DEFAULT_EXAMPLES_SPLIT in corpus.qrels:
        split = DEFAULT_EXAMPLES_SPLIT
    if split is None:
        return built_in_examples(), "built-in"
    pool = real_examples(corpus, split, settings.seed, settings.example_chars)
    if len(pool) < settings.shots:
        raise CorpusError(
            f"{corpus.path}: split '{split}' has {len(pool)} judged queries, fewer than the {settings.shots} "
            "examples a prompt shows; lower --shots or name another --examples-split"
        )
    return pool, f"split {split}"


@dataclass
class GenerationStats:
    fresh: int = 0
    cached: int = 0
    seconds: float = 0.0


def generate_candidates(
    passages: list[Passage],
    pool: list[Example],
    settings: SynthesisSettings,
    generator: Generator,
    cache: Cache,
    progress: ProgressCallback | None = None,
) -> tuple[list[Candidate], GenerationStats]:
    """Returns one candidate per (passage, variant), asking the generator only for answers not in the cache.

    The ``k``-th question of a passage is prompted with the ``k``-th group of examples, so the
    questions of one passage differ even under greedy decoding. Raises ``ModelError``.
    """
    stats = GenerationStats()
    started = time.perf_counter()
    candidates = []
    total = len(passages) * settings.per_document
    for passage in passages:
        for variant in range(settings.per_document):
            prompt = Prompt(examples_for(pool, settings.shots, variant), passage.text)
            request = generator.request(prompt)

            def ask(request: dict[str, Any] = request) -> bytes:
                stats.fresh += 1
                return json.dumps({"text": generator.complete(request)}).encode()

            address = {"stage": GENERATION_STAGE, "generator": generator.fingerprint, "request": request}
            raw = json.loads(cache.blob("generations", address, ask))["text"]
            candidates.append(
                Candidate(
                    f"synthetic-{passage.doc_id}-{variant + 1}",
                    passage.doc_id,
                    passage.text,
                    read_question(raw),
                    tuple(example.question for example in prompt.examples),
                )
            )
            if progress is not None:
                progress("generating questions", len(candidates), total)
    stats.cached = len(candidates) - stats.fresh
    stats.seconds = time.perf_counter() - started
    return candidates, stats


def apply_filters(
    candidates: list[Candidate],
    settings: SynthesisSettings,
    corpus: Corpus,
    cache: Cache,
    progress: ProgressCallback | None = None,
) -> tuple[list[Candidate], list[FilterOutcome]]:
    """Returns the questions every filter kept, and each filter's outcome in the order they ran."""
    outcomes = [length_filter(candidates, settings.min_words, settings.max_words)]
    outcomes.append(example_copy_filter(outcomes[-1].kept, settings.max_example_overlap))
    outcomes.append(passage_copy_filter(outcomes[-1].kept, settings.max_copied_words))
    outcomes.append(duplicate_filter(outcomes[-1].kept))
    if settings.round_trip_k and outcomes[-1].kept:
        kept = outcomes[-1].kept
        runs = bm25_and_dense_runs(
            corpus, {c.query_id: c.question for c in kept}, settings.round_trip_k, cache, progress
        )
        outcomes.append(round_trip_filter(kept, runs, settings.round_trip_k))
    return outcomes[-1].kept, outcomes


def _filter_settings(settings: SynthesisSettings) -> dict[str, str]:
    return {
        "length": f"{settings.min_words} to {settings.max_words} words",
        "example copy": f"word-set overlap (Jaccard) with a prompt example above {settings.max_example_overlap}",
        "passage copy": f"more than {settings.max_copied_words} consecutive words shared with the passage",
        "duplicate": "same words in the same order as an earlier question",
        "round trip": f"source document outside the top {settings.round_trip_k} of both BM25 and dense retrieval",
    }


def synthesize(
    corpus_path: Path,
    out: Path,
    spec: GeneratorSpec,
    settings: SynthesisSettings,
    cache: Cache,
    progress: ProgressCallback | None = None,
) -> dict[str, Any]:
    """Writes a BEIR folder at ``out`` whose ``synthetic`` split holds generated, filtered questions; returns its card.

    ``corpus_path`` is a judged corpus folder or documents alone (see ``load_source``). Every input
    is checked before the first question is asked: the corpus, the output folder, the
    examples split, the generator (model file or endpoint), and the dense model of the round-trip
    check. Raises ``CorpusError``, ``ConfigError`` or ``ModelError``; ``KeyboardInterrupt`` leaves
    the answers so far in the cache and nothing at ``out``.
    """
    corpus = load_source(corpus_path)
    check_new_folder(out)
    check_outside_documents(corpus, out)
    if SYNTHETIC_SPLIT in corpus.qrels:
        raise CorpusError(f"{corpus.path}: already has a '{SYNTHETIC_SPLIT}' split; generate from the original corpus")
    pool, examples_source = example_pool(corpus, settings)
    generator = open_generator(spec)
    if settings.round_trip_k:
        from workbench.retrieval.models import load_encoder

        load_encoder(DEFAULT_MODEL)
    passages = sample_passages(corpus, settings.documents, settings.seed, settings.passage_chars)
    candidates, stats = generate_candidates(passages, pool, settings, generator, cache, progress)
    kept, outcomes = apply_filters(candidates, settings, corpus, cache, progress)
    descriptions = _filter_settings(settings)
    card = {
        "split": SYNTHETIC_SPLIT,
        "source_corpus": str(corpus.path.resolve()),
        "corpus_fingerprint": corpus.fingerprint,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "code_version": code_version(),
        "generator": generator.description,
        "generation_stage": GENERATION_STAGE,
        "seed": settings.seed,
        "settings": settings.model_dump(),
        "prompt": {
            "examples_from": examples_source,
            "shots": settings.shots,
            "example_query_ids": [ex.source for ex in pool if ex.source != "built-in"],
            "examples": [{"passage": ex.passage, "question": ex.question, "source": ex.source} for ex in pool],
            "first_prompt": Prompt(examples_for(pool, settings.shots, 0), passages[0].text).as_text(),
        },
        "counts": {
            "documents_requested": settings.documents,
            "documents_sampled": len(passages),
            "generated": len(candidates),
            "kept": len(kept),
        },
        "filters": [
            {
                "name": outcome.name,
                "rule": descriptions[outcome.name],
                "before": len(outcome.kept) + len(outcome.dropped),
                "dropped": len(outcome.dropped),
                "after": len(outcome.kept),
                "dropped_examples": [
                    {"doc_id": c.doc_id, "question": c.question} for c in outcome.dropped[:DROPPED_SHOWN]
                ],
            }
            for outcome in outcomes
        ],
        "generation": {
            "asked_now": stats.fresh,
            "from_cache": stats.cached,
            "seconds": round(stats.seconds, 1),
            "seconds_per_question_asked": round(stats.seconds / stats.fresh, 3) if stats.fresh else None,
        },
    }
    if not kept:
        counts = ", ".join(f"{outcome.name} dropped {len(outcome.dropped)}" for outcome in outcomes)
        raise CorpusError(
            f"all {len(candidates)} generated questions were filtered out ({counts}); "
            "try more documents, another model or looser filters"
        )
    queries = [SyntheticQuery(c.query_id, c.doc_id, c.question) for c in kept]
    write_synthetic_corpus(corpus, out, queries, card, settings.copy_corpus)
    return card
