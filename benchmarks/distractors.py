"""A distractor corpus: all of SciFact, its queries and qrels unchanged, plus N passages that answer none of them.

Each distractor is a title and 3 to 10 sentences drawn (without repeats inside a passage) from
the other shared corpora (cranfield, cisi, adi: aeronautics and library science), so no SciFact
text, relevant or not, is repeated. The number of sentences follows SciFact's own abstracts
(their sentence counts, clipped to 3..10), so BM25's length normalisation and the encoders meet
passages of the usual length. Passages are written one at a time, so memory stays bounded
whatever N is; the same seed gives byte-identical files.

    .venv/bin/python benchmarks/distractors.py --out DIR --distractors 100000 [--seed 42]
        [--scifact ../shared/corpora/scifact]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import time
from pathlib import Path

SHARED_CORPORA = Path(__file__).resolve().parents[2] / "shared" / "corpora"
SCIFACT = SHARED_CORPORA / "scifact"
SENTENCE_SOURCES = ("cranfield", "cisi", "adi")
DISTRACTOR_ID_PREFIX = "distractor-"
MIN_SENTENCES, MAX_SENTENCES = 3, 10
MIN_SENTENCE_WORDS = 4  # shorter pieces are list items and section numbers, not sentences
CARD = "distractors.json"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def sentences_of(text: str) -> list[str]:
    """Returns the sentences of ``text`` with at least ``MIN_SENTENCE_WORDS`` words."""
    return [piece for piece in _SENTENCE_END.split(text.strip()) if len(piece.split()) >= MIN_SENTENCE_WORDS]


def _documents(corpus: Path):
    with (corpus / "corpus.jsonl").open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def sentence_pool(sources: list[Path]) -> tuple[list[str], list[str]]:
    """Returns the distinct sentences and the distinct non-empty titles of the corpora at ``sources``,
    in first-seen order (so a seed always draws the same ones)."""
    sentences: dict[str, None] = {}
    titles: dict[str, None] = {}
    for corpus in sources:
        for document in _documents(corpus):
            sentences.update(dict.fromkeys(sentences_of(document.get("text", ""))))
            if document.get("title", "").strip():
                titles[document["title"].strip()] = None
    return list(sentences), list(titles)


def passage_lengths(scifact: Path) -> list[int]:
    """Returns the sentence count of each SciFact abstract, clipped to MIN_SENTENCES..MAX_SENTENCES."""
    return [
        min(MAX_SENTENCES, max(MIN_SENTENCES, len(sentences_of(document.get("text", "")))))
        for document in _documents(scifact)
    ]


def write_distractor_corpus(
    out: Path, distractors: int, seed: int, scifact: Path = SCIFACT, sources: list[Path] | None = None
) -> dict:
    """Writes the BEIR folder ``out`` (corpus.jsonl, queries.jsonl, qrels/) of SciFact plus ``distractors``
    passages; returns the card also written to ``out/distractors.json`` (counts, seed, sources, seconds).

    SciFact's lines, queries and qrels are copied byte for byte, then the distractors follow, with
    ids ``distractor-0000001`` and on. Raises ``ValueError`` for a negative count, a SciFact id that
    looks like a distractor id, or sources without sentences.
    """
    if distractors < 0:
        raise ValueError(f"--distractors must be 0 or more, got {distractors}")
    sources = sources or [SHARED_CORPORA / name for name in SENTENCE_SOURCES]
    started = time.perf_counter()
    scifact_ids = [document["_id"] for document in _documents(scifact)]
    clash = next((doc_id for doc_id in scifact_ids if doc_id.startswith(DISTRACTOR_ID_PREFIX)), None)
    if clash is not None:
        raise ValueError(f"{scifact}: doc id {clash!r} would collide with the distractor ids")
    sentences, titles = sentence_pool(sources)
    if len(sentences) < MAX_SENTENCES or not titles:
        raise ValueError(f"{', '.join(map(str, sources))}: too few sentences or titles to draw passages from")
    lengths = passage_lengths(scifact)

    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    for name in ("queries.jsonl", "qrels/train.tsv", "qrels/test.tsv"):
        shutil.copyfile(scifact / name, out / name)
    rng = random.Random(seed)
    digits = max(7, len(str(distractors)))
    with (out / "corpus.jsonl").open("wb") as corpus:
        scifact_bytes = (scifact / "corpus.jsonl").read_bytes()
        corpus.write(scifact_bytes if scifact_bytes.endswith(b"\n") else scifact_bytes + b"\n")
        batch: list[str] = []
        for number in range(1, distractors + 1):
            count = rng.choice(lengths)
            passage = {
                "_id": f"{DISTRACTOR_ID_PREFIX}{number:0{digits}d}",
                "title": rng.choice(titles),
                "text": " ".join(rng.sample(sentences, count)),
            }
            batch.append(json.dumps(passage, ensure_ascii=False))
            if len(batch) == 10_000:
                corpus.write(("\n".join(batch) + "\n").encode("utf-8"))
                batch.clear()
        if batch:
            corpus.write(("\n".join(batch) + "\n").encode("utf-8"))
    card = {
        "scifact": str(scifact),
        "scifact_documents": len(scifact_ids),
        "distractors": distractors,
        "documents": len(scifact_ids) + distractors,
        "seed": seed,
        "sentence_sources": [str(source) for source in sources],
        "sentence_pool": len(sentences),
        "title_pool": len(titles),
        "sentences_per_passage": f"SciFact's per-abstract counts clipped to {MIN_SENTENCES}..{MAX_SENTENCES}",
        "seconds": round(time.perf_counter() - started, 2),
    }
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n")
    return card


def main() -> None:
    parser = argparse.ArgumentParser(prog="benchmarks/distractors.py", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="BEIR folder to write (created if needed)")
    parser.add_argument("--distractors", type=int, required=True, help="passages added to SciFact")
    parser.add_argument("--seed", type=int, default=42, help="seed of the draws (default: %(default)s)")
    parser.add_argument("--scifact", type=Path, default=SCIFACT, help="SciFact folder (default: %(default)s)")
    args = parser.parse_args()
    from workbench.files import file_sha256

    card = write_distractor_corpus(args.out, args.distractors, args.seed, args.scifact)
    print(
        f"wrote {args.out}: {card['documents']:,} documents ({card['distractors']:,} distractors from "
        f"{card['sentence_pool']:,} sentences) in {card['seconds']:.1f} s; "
        f"corpus.jsonl sha256 {file_sha256(args.out / 'corpus.jsonl')}"
    )


if __name__ == "__main__":
    main()
