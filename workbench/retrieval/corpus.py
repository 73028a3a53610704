"""Loading and validating a corpus folder: documents, queries and graded qrels.

Two layouts are read:

* BEIR: ``corpus.jsonl`` (``_id``, optional ``title``, ``text``), ``queries.jsonl``
  (``_id``, ``text``) and ``qrels/<split>.tsv``. Either JSONL file may be gzipped
  (``corpus.jsonl.gz``, ``queries.jsonl.gz``).
* Plain folder: ``docs/**/*.txt`` and ``docs/**/*.md`` (doc id = path relative to
  ``docs/`` with forward slashes, empty title, text = file content), queries in
  ``queries.jsonl`` or ``queries.tsv`` (``id<TAB>text``, no header) and ``qrels/<split>.tsv``.

A qrels file has three tab-separated columns (query id, doc id, integer grade) and an
optional header row. Validation only reads: it never writes or caches anything.

Indexing and search need documents only: ``load_documents`` reads a ``corpus.jsonl`` (the file or
its folder), a ``docs/`` folder, or a folder of ``.txt``/``.md`` files, with no queries or qrels.
Evaluation and studies go through ``load_corpus``, which requires judgements and says so;
``workbench synthesize`` takes either (``has_judgements`` tells which a folder is).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from workbench.errors import CorpusError
from workbench.types import Document, Qrels

Severity = Literal["error", "warning"]

# A wrong corpus can put one problem on every qrels row; past this many per file the
# rest are counted rather than listed, so a report stays readable.
MAX_PROBLEMS_PER_FILE = 20

_CORPUS_FILES = ("corpus.jsonl", "corpus.jsonl.gz")
_QUERY_FILES = ("queries.jsonl", "queries.jsonl.gz", "queries.tsv")
_DOC_SUFFIXES = (".txt", ".md")
NO_JUDGEMENTS = (
    "no queries file and no qrels/ folder: evaluating and tuning need judged queries "
    "(queries.jsonl and qrels/<split>.tsv); to index and search documents alone, use `workbench index`; "
    "to generate judged queries from them, `workbench synthesize`"
)


@dataclass(frozen=True)
class Problem:
    severity: Severity
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class Corpus:
    path: Path
    documents: dict[str, Document]  # in file order
    queries: dict[str, str]  # every query of the queries file, in file order
    qrels: dict[str, Qrels]  # split name -> query id -> doc id -> grade
    # sha256 over the documents in file order: a reordered corpus can break score ties
    # differently, so it counts as a different corpus for caching.
    fingerprint: str

    def splits(self) -> list[str]:
        """Return the split names (qrels file stems), sorted."""
        return sorted(self.qrels)

    def split_qrels(self, split: str) -> Qrels:
        """Return a copy of the qrels of ``split``; raise CorpusError if there is no such split."""
        return {query_id: dict(grades) for query_id, grades in self._qrels_of(split).items()}

    def judged_queries(self, split: str) -> dict[str, str]:
        """Return query id -> text for the queries of ``split`` with at least one grade > 0.

        Queries come in queries-file order. Raises CorpusError if there is no such split.
        """
        qrels = self._qrels_of(split)
        return {
            query_id: text
            for query_id, text in self.queries.items()
            if any(grade > 0 for grade in qrels.get(query_id, {}).values())
        }

    def _qrels_of(self, split: str) -> Qrels:
        if split not in self.qrels:
            available = ", ".join(self.splits())
            raise CorpusError(
                f"{self.path}: no split {split!r}; available splits: {available} (one per qrels/<split>.tsv)"
            )
        return self.qrels[split]


@dataclass(frozen=True)
class ValidationReport:
    corpus: Corpus | None  # None when there is at least one error
    problems: tuple[Problem, ...]
    split_counts: dict[str, tuple[int, int]]  # split -> (judged queries, qrels rows)

    @property
    def errors(self) -> tuple[Problem, ...]:
        """Return the problems that make the corpus unusable."""
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """Return the problems that do not stop loading."""
        return tuple(p for p in self.problems if p.severity == "warning")

    @property
    def ok(self) -> bool:
        """Return True when there are no errors (warnings allowed)."""
        return not self.errors


def load_corpus(path: str | Path) -> Corpus:
    """Load the corpus folder at ``path`` (BEIR or plain-folder layout).

    Returns the Corpus. Raises CorpusError carrying the first error that
    validate_corpus finds (file and line); warnings do not stop loading.
    """
    report = validate_corpus(path)
    if report.corpus is None:
        errors = report.errors
        more = f" (and {len(errors) - 1} more; run `workbench validate {path}`)" if len(errors) > 1 else ""
        raise CorpusError(f"{errors[0]}{more}")
    return report.corpus


def load_documents(path: str | Path) -> Corpus:
    """Loads documents alone, for indexing and search: no queries or qrels are read or needed.

    ``path`` is a ``corpus.jsonl``/``corpus.jsonl.gz`` file, a folder holding one, a folder with a
    ``docs/`` folder, or a folder of ``.txt``/``.md`` files (doc id = path relative to it). Returns
    a Corpus with no queries and no splits; raises CorpusError naming the first problem (file and line).
    """
    root = Path(path)
    problems = _ProblemLog()
    documents: dict[str, Document] | None = None
    if root.is_file() and root.name.endswith((".jsonl", ".jsonl.gz")):
        try:
            documents = _read_jsonl_documents(root, problems)
        except _UnreadableFile:
            documents = None
    elif not root.is_dir():
        problems.error(root, None, "not found: expected a corpus.jsonl file or a folder of documents")
    elif _find_one(root, _CORPUS_FILES, _ProblemLog()) is not None or (root / "docs").is_dir():
        documents = _read_documents(root, problems)
    else:
        documents = _read_folder_documents(root, problems)
    errors = [problem for problem in problems.finish() if problem.severity == "error"]
    if errors or documents is None:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CorpusError(f"{errors[0]}{more}" if errors else f"{root}: no documents")
    return Corpus(root, documents, {}, {}, documents_fingerprint(documents.values()))


def has_judgements(path: str | Path) -> bool:
    """True when the folder at ``path`` has a qrels/ folder or a queries file with a line in it: then it
    is read as a judged corpus (``load_corpus``), else as documents alone (``load_documents``)."""
    root = Path(path)
    if not root.is_dir():
        return False
    return (root / "qrels").exists() or any(_has_a_line(root / name) for name in _QUERY_FILES)


def _has_a_line(path: Path) -> bool:
    """True when ``path`` is a file with a non-blank line; an unreadable one counts (loading reports it)."""
    if not path.is_file():
        return False
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            return any(line.strip() for line in handle)
    except (OSError, EOFError):
        return True


def validate_corpus(path: str | Path) -> ValidationReport:
    """Check every file of the corpus folder at ``path`` and collect what is wrong.

    Returns a ValidationReport; its ``corpus`` is set only when there are no errors.
    Raises nothing for bad input: every defect becomes a Problem with file and line.
    """
    root = Path(path)
    problems = _ProblemLog()
    if not root.is_dir():
        problems.error(root, None, "not a directory; expected a corpus folder (BEIR or docs/ layout)")
        return ValidationReport(None, problems.finish(), {})

    if not has_judgements(root):  # documents alone: fine for `workbench index`, not for evaluation
        problems.error(root, None, NO_JUDGEMENTS)
        return ValidationReport(None, problems.finish(), {})
    documents = _read_documents(root, problems)
    queries = _read_queries(root, problems)
    # With no documents (or queries) at all, every qrels row would be one more error saying so.
    qrels, split_counts = _read_all_qrels(root, documents or None, queries or None, problems)

    found = problems.finish()
    corpus = None
    if documents is not None and queries is not None and not any(p.severity == "error" for p in found):
        corpus = Corpus(root, documents, queries, qrels, documents_fingerprint(documents.values()))
    return ValidationReport(corpus, found, split_counts)


@dataclass
class _ProblemLog:
    problems: list[Problem] = field(default_factory=list)
    per_file: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, list[Severity]] = field(default_factory=dict)

    def error(self, file: Path, line: int | None, message: str) -> None:
        self._add("error", file, line, message)

    def warning(self, file: Path, line: int | None, message: str) -> None:
        self._add("warning", file, line, message)

    def _add(self, severity: Severity, file: Path, line: int | None, message: str) -> None:
        name = str(file)
        self.per_file[name] = self.per_file.get(name, 0) + 1
        if self.per_file[name] > MAX_PROBLEMS_PER_FILE:
            self.suppressed.setdefault(name, []).append(severity)
        else:
            self.problems.append(Problem(severity, name, line, message))

    def finish(self) -> tuple[Problem, ...]:
        """Return the problems, with one line per file that had more than were listed."""
        summaries = [
            Problem("error" if "error" in kinds else "warning", name, None, f"{len(kinds)} more problems not listed")
            for name, kinds in self.suppressed.items()
        ]
        return tuple(self.problems + summaries)


class _UnreadableFile(Exception):
    """A file failed part-way; already reported, so its callers drop it instead of piling on errors."""


def _read_lines(path: Path, problems: _ProblemLog) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text without line ending) for each line that decodes.

    Records undecodable lines as problems; raises _UnreadableFile if the file cannot be read.
    """
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8", errors="strict")
                except UnicodeDecodeError as exc:
                    problems.error(
                        path,
                        number,
                        f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}; "
                        "re-encode the file as UTF-8",
                    )
                    continue
                if number == 1:
                    text = text.removeprefix("\ufeff")
                yield number, text.rstrip("\r\n")
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        problems.error(path, None, f"cannot be read: {exc}")
        raise _UnreadableFile from exc


def _find_one(root: Path, names: tuple[str, ...], problems: _ProblemLog) -> Path | None:
    present = [root / name for name in names if (root / name).is_file()]
    if len(present) > 1:
        problems.error(root, None, f"both {present[0].name} and {present[1].name} exist; keep only one")
    return present[0] if present else None


def _read_documents(root: Path, problems: _ProblemLog) -> dict[str, Document] | None:
    corpus_file = _find_one(root, _CORPUS_FILES, problems)
    if corpus_file is not None:
        try:
            return _read_jsonl_documents(corpus_file, problems)
        except _UnreadableFile:
            return None
    if (root / "docs").is_dir():
        return _read_folder_documents(root / "docs", problems)
    problems.error(
        root,
        None,
        "no corpus found: expected corpus.jsonl or corpus.jsonl.gz (BEIR layout) or a docs/ folder of .txt/.md files",
    )
    return None


def _read_jsonl_documents(path: Path, problems: _ProblemLog) -> dict[str, Document]:
    documents: dict[str, Document] = {}
    first_line: dict[str, int] = {}
    for number, record in _read_json_records(path, problems):
        doc_id = _string_field(record, "_id", path, number, problems)
        text = _string_field(record, "text", path, number, problems)
        title = record.get("title")
        title = "" if title is None else title
        if not isinstance(title, str):
            problems.error(path, number, f"'title' must be a string, got {type(title).__name__}")
            continue
        if doc_id is None or text is None:
            continue
        if _has_whitespace(doc_id, "doc id", path, number, problems):
            continue
        if doc_id in first_line:
            problems.error(path, number, f"duplicate doc id {doc_id!r}; first at line {first_line[doc_id]}")
            continue
        first_line[doc_id] = number
        documents[doc_id] = Document(doc_id, title, text)
        if not (title + text).strip():
            problems.warning(path, number, f"document {doc_id!r} is empty (no title and no text)")
    if not documents:
        problems.error(path, None, "contains no documents")
    return documents


def _read_folder_documents(docs_dir: Path, problems: _ProblemLog) -> dict[str, Document]:
    documents: dict[str, Document] = {}
    entries = [
        p
        for p in docs_dir.rglob("*")
        if not any(part.startswith(".") for part in p.relative_to(docs_dir).parts)  # .git, editor backups
    ]
    if _links_out_of(docs_dir, entries, problems):
        return documents
    files = sorted(p for p in entries if p.is_file() and p.suffix in _DOC_SUFFIXES)
    for file in files:
        doc_id = file.relative_to(docs_dir).as_posix()
        if _has_whitespace(doc_id, "doc id (the file's path under docs/)", file, None, problems):
            continue
        try:
            lines = [text for _, text in _read_lines(file, problems)]
        except _UnreadableFile:
            continue
        # Rebuild the text from decoded lines: the line reader already reported any bad bytes.
        text = "\n".join(lines)
        documents[doc_id] = Document(doc_id, "", text)
        if not text.strip():
            problems.warning(file, None, f"document {doc_id!r} is empty")
    if not documents:
        problems.error(docs_dir, None, "contains no .txt or .md files")
    return documents


def _links_out_of(docs_dir: Path, entries: list[Path], problems: _ProblemLog) -> bool:
    """Reports every symlink among ``entries`` that leads out of ``docs_dir``; True when there is one.

    Refused rather than skipped: a link that reaches outside the folder (to ~/.ssh, to /etc) would
    put that file's text in an index that `workbench serve` then hands to any caller.
    """
    root = docs_dir.resolve()
    found = False
    for entry in entries:
        if entry.is_symlink() and not entry.resolve().is_relative_to(root):
            problems.error(
                entry,
                None,
                f"symbolic link to a path outside {docs_dir}; move the file into the folder or remove the link",
            )
            found = True
    return found


def _read_queries(root: Path, problems: _ProblemLog) -> dict[str, str] | None:
    path = _find_one(root, _QUERY_FILES, problems)
    if path is None:
        problems.error(root, None, "no queries file: expected queries.jsonl, queries.jsonl.gz or queries.tsv")
        return None
    try:
        return _read_query_file(path, problems)
    except _UnreadableFile:
        return None


def _read_query_file(path: Path, problems: _ProblemLog) -> dict[str, str]:
    queries: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, query_id, text in _query_rows(path, problems):
        if _has_whitespace(query_id, "query id", path, number, problems):
            continue
        if query_id in first_line:
            first = first_line[query_id]
            problems.error(path, number, f"duplicate query id {query_id!r}; first at line {first}")
            continue
        first_line[query_id] = number
        queries[query_id] = text
        if not text.strip():
            problems.warning(path, number, f"query {query_id!r} has empty text")
    if not queries:
        problems.error(path, None, "contains no queries")
    return queries


def _query_rows(path: Path, problems: _ProblemLog) -> Iterator[tuple[int, str, str]]:
    if path.name == "queries.tsv":
        for number, line in _read_lines(path, problems):
            if not line.strip():
                continue
            columns = line.split("\t", 1)
            if len(columns) != 2 or not columns[0]:
                problems.error(path, number, "expected 'query id<TAB>query text'")
                continue
            yield number, columns[0], columns[1]
        return
    for number, record in _read_json_records(path, problems):
        query_id = _string_field(record, "_id", path, number, problems)
        text = _string_field(record, "text", path, number, problems)
        if query_id is not None and text is not None:
            yield number, query_id, text


def _read_json_records(path: Path, problems: _ProblemLog) -> Iterator[tuple[int, dict]]:
    for number, line in _read_lines(path, problems):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.error(path, number, f"malformed JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(record, dict):
            problems.error(path, number, f"expected a JSON object, got {type(record).__name__}")
            continue
        yield number, record


def _string_field(record: dict, key: str, path: Path, number: int, problems: _ProblemLog) -> str | None:
    value = record.get(key)
    if value is None:
        problems.error(path, number, f"missing {key!r}")
        return None
    if not isinstance(value, str):
        problems.error(path, number, f"{key!r} must be a string, got {type(value).__name__}")
        return None
    if key == "_id" and not value:
        problems.error(path, number, "'_id' is empty")
        return None
    return value


def _has_whitespace(identifier: str, what: str, path: Path, number: int | None, problems: _ProblemLog) -> bool:
    """Records an error and returns True when ``identifier`` holds whitespace, which TREC run files
    (``evaluate --run-out``) and qrels columns cannot carry."""
    if not any(char.isspace() for char in identifier):
        return False
    problems.error(path, number, f"{what} {identifier!r} contains whitespace; TREC run files cannot hold it, rename it")
    return True


def _read_all_qrels(
    root: Path,
    documents: dict[str, Document] | None,
    queries: dict[str, str] | None,
    problems: _ProblemLog,
) -> tuple[dict[str, Qrels], dict[str, tuple[int, int]]]:
    qrels_dir = root / "qrels"
    if not qrels_dir.is_dir():
        problems.error(qrels_dir, None, "missing: expected a qrels/ folder with one <split>.tsv per split")
        return {}, {}
    qrels: dict[str, Qrels] = {}
    split_counts: dict[str, tuple[int, int]] = {}
    split_files = []
    for path in sorted(qrels_dir.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix != ".tsv" or not path.is_file():
            problems.warning(path, None, "ignored: qrels files must be named <split>.tsv")
            continue
        split_files.append(path)
        try:
            split_qrels, rows = _read_qrels(path, documents, queries, problems)
        except _UnreadableFile:
            continue
        judged = sum(1 for grades in split_qrels.values() if any(g > 0 for g in grades.values()))
        qrels[path.stem] = split_qrels
        split_counts[path.stem] = (judged, rows)
    if not split_files:
        problems.error(qrels_dir, None, "contains no <split>.tsv files")
    return qrels, split_counts


def _read_qrels(
    path: Path,
    documents: dict[str, Document] | None,
    queries: dict[str, str] | None,
    problems: _ProblemLog,
) -> tuple[Qrels, int]:
    """Return the qrels of one split file and how many rows it kept."""
    qrels: Qrels = {}
    first_line: dict[tuple[str, str], int] = {}
    rows = 0
    # Counted before the id checks: a file whose ids are all wrong needs no extra error on top.
    relevant_rows = 0
    for number, line in _read_lines(path, problems):
        if not line.strip():
            continue
        columns = line.split("\t")
        if len(columns) != 3:
            trec = len(columns) == 4
            hint = "; TREC qrels (query 0 doc grade) need their second column dropped" if trec else ""
            problems.error(
                path,
                number,
                f"expected 3 tab-separated columns (query-id, corpus-id, score), found {len(columns)}{hint}",
            )
            continue
        query_id, doc_id, score = (column.strip() for column in columns)
        try:
            grade = int(score)
        except ValueError:
            # The first row is a header when its score is not a number and it names no known query.
            if number == 1 and (queries is None or query_id not in queries):
                continue
            problems.error(path, number, f"score {score!r} is not an integer")
            continue
        relevant_rows += grade > 0
        if queries is not None and query_id not in queries:
            problems.error(path, number, f"query id {query_id!r} is not in the queries file")
            continue
        if documents is not None and doc_id not in documents:
            problems.error(path, number, f"doc id {doc_id!r} is not in the corpus")
            continue
        if (query_id, doc_id) in first_line:
            first = first_line[query_id, doc_id]
            problems.error(path, number, f"duplicate judgement of ({query_id!r}, {doc_id!r}); first at line {first}")
            continue
        first_line[query_id, doc_id] = number
        qrels.setdefault(query_id, {})[doc_id] = grade
        rows += 1
    if relevant_rows == 0:
        problems.error(path, None, "no judged queries: no row has a score > 0")
    return qrels, rows


def documents_fingerprint(documents: Iterable[Document]) -> str:
    """Returns the sha256 over the documents in order (id, title, text): the corpus fingerprint."""
    digest = hashlib.sha256()
    for document in documents:
        record = json.dumps([document.doc_id, document.title, document.text], ensure_ascii=False)
        digest.update(record.encode("utf-8"))
        digest.update(b"\n")
    return digest.hexdigest()
