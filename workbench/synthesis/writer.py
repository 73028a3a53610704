"""The output of ``workbench synthesize``: a BEIR folder whose ``synthetic`` split holds the generated
questions, beside the source corpus' own splits, and a card (``synthesize.json``) saying how it was made.

The folder is built under a temporary name next to ``--out`` and renamed into place when complete,
so an interrupted run leaves nothing half-written, and an existing non-empty folder is never touched.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.errors import CorpusError
from workbench.files import atomic_write_bytes, building_folder, check_new_folder
from workbench.retrieval.corpus import Corpus

SYNTHETIC_SPLIT = "synthetic"
CARD_NAME = "synthesize.json"
_CORPUS_FILES = ("corpus.jsonl", "corpus.jsonl.gz")


@dataclass(frozen=True)
class SyntheticQuery:
    query_id: str
    doc_id: str
    text: str


def write_synthetic_corpus(
    source: Corpus, out: Path, queries: Iterable[SyntheticQuery], card: dict[str, Any], copy_corpus: bool = False
) -> None:
    """Writes the BEIR folder ``out``: the source's documents (a symlink to them, or a copy; a folder of
    text files becomes its ``docs/``), every real query (none for documents alone) plus the generated
    ones in ``queries.jsonl``, the real ``qrels/*.tsv`` as they are, ``qrels/synthetic.tsv`` (each question judged relevant, grade 1, to the document it was written
    from) and the card. Raises ``CorpusError`` when ``out`` is taken, lies inside the documents it
    links to, or a generated id clashes.
    """
    check_new_folder(out)
    check_outside_documents(source, out)
    queries = list(queries)
    clashes = [query.query_id for query in queries if query.query_id in source.queries]
    if clashes:
        raise CorpusError(f"{source.path}: query ids {clashes[:3]} exist already; generated ids would clash")
    if SYNTHETIC_SPLIT in source.qrels:
        raise CorpusError(
            f"{source.path}: already has a '{SYNTHETIC_SPLIT}' split; generate from the original corpus instead"
        )
    with building_folder(out) as building:
        _place_documents(source.path.resolve(), building, copy_corpus)
        lines = [json.dumps({"_id": qid, "text": text}, ensure_ascii=False) for qid, text in source.queries.items()]
        lines += [
            json.dumps(
                {"_id": q.query_id, "text": q.text, "metadata": {"generated_from": q.doc_id}}, ensure_ascii=False
            )
            for q in queries
        ]
        (building / "queries.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (building / "qrels").mkdir()
        for split in source.splits():
            shutil.copyfile(source.path / "qrels" / f"{split}.tsv", building / "qrels" / f"{split}.tsv")
        rows = ["query-id\tcorpus-id\tscore"] + [f"{q.query_id}\t{q.doc_id}\t1" for q in queries]
        (building / "qrels" / f"{SYNTHETIC_SPLIT}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        atomic_write_bytes(building / CARD_NAME, json.dumps(card, indent=2, ensure_ascii=False).encode())


def _documents_source(source: Path) -> tuple[Path, str]:
    """Returns where the documents of the corpus at ``source`` live and the name they take in a BEIR folder:
    a ``corpus.jsonl``/``corpus.jsonl.gz`` file, a ``docs/`` folder, or a folder of files (as ``docs``)."""
    if source.is_file():
        return source, "corpus.jsonl.gz" if source.name.endswith(".gz") else "corpus.jsonl"
    for name in (*_CORPUS_FILES, "docs"):
        if (source / name).exists():
            return source / name, name
    return source, "docs"


def check_outside_documents(source: Corpus, out: Path) -> None:
    """Raises ``CorpusError`` when ``out`` lies inside a folder of documents it would link to (its
    own documents would then include it)."""
    documents, name = _documents_source(source.path.resolve())
    if name == "docs" and out.resolve().is_relative_to(documents.resolve()):
        raise CorpusError(f"--out {out} lies inside the documents folder {documents}; write it elsewhere")


def _place_documents(source: Path, target: Path, copy_corpus: bool) -> None:
    documents, name = _documents_source(source)
    if not copy_corpus:
        (target / name).symlink_to(documents.resolve(), target_is_directory=documents.is_dir())
    elif documents.is_dir():
        # Only what the corpus reads: the documents' own files, nothing hidden.
        shutil.copytree(documents, target / name, ignore=shutil.ignore_patterns(".*"))
    else:
        shutil.copyfile(documents, target / name)


def read_card(corpus_dir: Path) -> dict[str, Any] | None:
    """Returns the synthesis card of a corpus folder, or None when it has none or it cannot be read."""
    try:
        return json.loads((Path(corpus_dir) / CARD_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def generated_queries_note(corpus: Corpus, tune_split: str, heldout_split: str | None) -> str | None:
    """Returns the line a study prints when its tuning queries were generated, or None when they are real.

    The line starts with ``WARNING`` when no real query checks the result (the held-out queries are a
    slice of the generated ones) or when a held-out query was shown to the generator as an example.
    """
    card = read_card(corpus.path)
    if card is None or card.get("split") != tune_split:
        return None
    generator = card.get("generator", {})
    made = (
        f"the tuning queries were generated ({card.get('counts', {}).get('kept', '?')} questions by "
        f"{generator.get('model', '?')}, see {corpus.path / CARD_NAME})"
    )
    if heldout_split is None:
        return (
            f"WARNING: {made}, and so are the held-out ones: no real query has checked this result; "
            "set heldout_split to a split of real judged queries"
        )
    shown = set(card.get("prompt", {}).get("example_query_ids", []))
    if leaked := shown & set(corpus.judged_queries(heldout_split)):
        return (
            f"WARNING: {made}; {len(leaked)} held-out queries were shown to the generator as examples, "
            f"so split '{heldout_split}' is no clean test: generate again with another --examples-split"
        )
    return f"note: {made}; the verdict on the real held-out queries ('{heldout_split}') is the one that counts"
