"""Tests of workbench/corpus.py: both layouts, every defect the validator reports, the shipped corpora."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from workbench.errors import CorpusError
from workbench.retrieval.corpus import MAX_PROBLEMS_PER_FILE, Problem, ValidationReport, load_corpus, validate_corpus

CORPORA = Path(__file__).resolve().parents[2] / "corpora"

DOCS = [
    {"_id": "d1", "title": "Cats", "text": "Cats purr."},
    {"_id": "d2", "title": "", "text": "Dogs bark."},
    {"_id": "d3", "text": "Birds sing."},
]
QUERIES = [{"_id": "q1", "text": "purring"}, {"_id": "q2", "text": "barking"}]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td2\t1\n"


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(record) + "\n" for record in records)


def write(path: Path, content: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


def make_beir(
    root: Path,
    corpus: str | bytes | None = None,
    queries: str | bytes | None = None,
    qrels: dict[str, str | bytes] | None = None,
) -> Path:
    """Write a small valid BEIR corpus under ``root``, replacing the parts given."""
    write(root / "corpus.jsonl", jsonl(DOCS) if corpus is None else corpus)
    write(root / "queries.jsonl", jsonl(QUERIES) if queries is None else queries)
    for split, content in ({"test": QRELS} if qrels is None else qrels).items():
        write(root / "qrels" / f"{split}.tsv", content)
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def validate_readonly(root: Path) -> ValidationReport:
    """Validate ``root`` and check that validation wrote nothing under it."""
    before = snapshot(root.parent)
    report = validate_corpus(root)
    assert snapshot(root.parent) == before
    return report


def only_error(report: ValidationReport) -> Problem:
    assert not report.ok
    assert report.corpus is None
    assert len(report.errors) == 1, [str(p) for p in report.errors]
    return report.errors[0]


def assert_error(root: Path, file: str, line: int | None, fragment: str) -> Problem:
    """Check that ``root`` has one error, at ``file``:``line`` saying ``fragment``; loading must fail with it."""
    problem = only_error(validate_readonly(root))
    assert problem.file == str(root / file)
    assert problem.line == line
    assert fragment in problem.message
    expected_prefix = f"{root / file}:{line}: " if line is not None else f"{root / file}: "
    assert str(problem).startswith(expected_prefix)
    with pytest.raises(CorpusError) as raised:
        load_corpus(root)
    assert str(raised.value).startswith(str(problem))
    return problem


# --- valid corpora ---------------------------------------------------------------------------


def test_valid_beir_corpus_loads_with_graded_qrels(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c")
    report = validate_readonly(root)
    assert report.ok and report.problems == ()
    assert report.split_counts == {"test": (2, 3)}
    corpus = load_corpus(root)
    assert list(corpus.documents) == ["d1", "d2", "d3"]
    assert corpus.documents["d1"].full_text == "Cats Cats purr."
    assert corpus.documents["d3"].title == ""
    assert corpus.queries == {"q1": "purring", "q2": "barking"}
    assert corpus.splits() == ["test"]
    qrels = corpus.split_qrels("test")
    assert qrels == {"q1": {"d1": 2, "d2": 0}, "q2": {"d2": 1}}
    assert all(type(grade) is int for grades in qrels.values() for grade in grades.values())


def test_judged_queries_need_a_positive_grade(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c", qrels={"dev": "q1\td1\t1\nq2\td2\t0\n"})
    corpus = load_corpus(root)
    assert corpus.judged_queries("dev") == {"q1": "purring"}
    assert corpus.split_qrels("dev") == {"q1": {"d1": 1}, "q2": {"d2": 0}}


def test_unknown_split_names_the_available_ones(tmp_path: Path) -> None:
    corpus = load_corpus(make_beir(tmp_path / "c", qrels={"test": QRELS, "train": QRELS}))
    with pytest.raises(CorpusError, match="available splits: test, train"):
        corpus.judged_queries("dev")
    with pytest.raises(CorpusError, match="'dev'"):
        corpus.split_qrels("dev")


def test_split_qrels_is_a_copy(tmp_path: Path) -> None:
    corpus = load_corpus(make_beir(tmp_path / "c"))
    corpus.split_qrels("test")["q1"]["d1"] = 0
    assert corpus.split_qrels("test")["q1"]["d1"] == 2


def test_headerless_qrels(tmp_path: Path) -> None:
    corpus = load_corpus(make_beir(tmp_path / "c", qrels={"test": "q1\td1\t1\r\nq2\td2\t3\r\n\n"}))
    assert corpus.split_qrels("test") == {"q1": {"d1": 1}, "q2": {"d2": 3}}


def test_gzipped_jsonl(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write(root / "corpus.jsonl.gz", gzip.compress(jsonl(DOCS).encode()))
    write(root / "queries.jsonl.gz", gzip.compress(jsonl(QUERIES).encode()))
    write(root / "qrels" / "test.tsv", QRELS)
    corpus = load_corpus(root)
    assert list(corpus.documents) == ["d1", "d2", "d3"]
    assert corpus.fingerprint == load_corpus(make_beir(tmp_path / "plain")).fingerprint


def test_corrupt_gzip_is_an_error(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c")
    (root / "corpus.jsonl").unlink()
    write(root / "corpus.jsonl.gz", b"not gzip at all")
    problem = only_error(validate_readonly(root))
    assert problem.file == str(root / "corpus.jsonl.gz")
    assert "cannot be read" in problem.message


def test_folder_layout(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    write(root / "docs" / "a.txt", "Cats purr.\n")
    write(root / "docs" / "sub" / "b.md", "# Dogs\nDogs bark.\n")
    write(root / "docs" / "ignored.pdf", "x")
    write(root / "queries.tsv", "q1\tpurring\nq2\tbarking\n")
    write(root / "qrels" / "test.tsv", "q1\ta.txt\t1\nq2\tsub/b.md\t1\n")
    corpus = load_corpus(root)
    assert list(corpus.documents) == ["a.txt", "sub/b.md"]
    assert corpus.documents["sub/b.md"].title == ""
    assert corpus.documents["sub/b.md"].text == "# Dogs\nDogs bark."
    assert corpus.judged_queries("test") == {"q1": "purring", "q2": "barking"}


def test_folder_layout_with_jsonl_queries(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    write(root / "docs" / "a.txt", "Cats purr.")
    write(root / "queries.jsonl", jsonl(QUERIES))
    write(root / "qrels" / "test.tsv", "q1\ta.txt\t1\n")
    assert load_corpus(root).split_qrels("test") == {"q1": {"a.txt": 1}}


def test_fingerprint_is_stable_and_tracks_text(tmp_path: Path) -> None:
    first = load_corpus(make_beir(tmp_path / "a")).fingerprint
    assert first == load_corpus(make_beir(tmp_path / "b")).fingerprint
    changed = [dict(DOCS[0], text="Cats purr loudly."), *DOCS[1:]]
    assert first != load_corpus(make_beir(tmp_path / "c", corpus=jsonl(changed))).fingerprint
    assert len(first) == 64


def test_empty_document_is_only_a_warning(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c", corpus=jsonl([*DOCS, {"_id": "d4", "title": " ", "text": "\n"}]))
    report = validate_readonly(root)
    assert report.ok and report.corpus is not None
    (warning,) = report.warnings
    assert (warning.file, warning.line) == (str(root / "corpus.jsonl"), 4)
    assert "empty" in warning.message
    assert "d4" in load_corpus(root).documents


# --- defects, each named by file and line ------------------------------------------------------


def test_malformed_json(tmp_path: Path) -> None:
    corpus = jsonl(DOCS[:2]) + '{"_id": "d3", "text": \n'
    assert_error(make_beir(tmp_path / "c", corpus=corpus), "corpus.jsonl", 3, "malformed JSON")


def test_json_line_that_is_not_an_object(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c", queries=jsonl(QUERIES) + "[1, 2]\n")
    assert_error(root, "queries.jsonl", 3, "JSON object")


@pytest.mark.parametrize(
    ("file", "bad_record", "fragment"),
    [
        ("corpus.jsonl", {"title": "t", "text": "no id"}, "missing '_id'"),
        ("corpus.jsonl", {"_id": "d9"}, "missing 'text'"),
        ("corpus.jsonl", {"_id": 9, "text": "numeric id"}, "'_id' must be a string"),
        ("corpus.jsonl", {"_id": "d9", "text": ["a list"]}, "'text' must be a string"),
        ("corpus.jsonl", {"_id": "d9", "title": 3, "text": "x"}, "'title' must be a string"),
        ("queries.jsonl", {"text": "no id"}, "missing '_id'"),
        ("queries.jsonl", {"_id": "q9"}, "missing 'text'"),
        ("queries.jsonl", {"_id": "q9", "text": 5}, "'text' must be a string"),
    ],
)
def test_bad_fields(tmp_path: Path, file: str, bad_record: dict, fragment: str) -> None:
    records = DOCS if file == "corpus.jsonl" else QUERIES
    content = jsonl([records[0], bad_record, *records[1:]])
    key = "corpus" if file == "corpus.jsonl" else "queries"
    assert_error(make_beir(tmp_path / "c", **{key: content}), file, 2, fragment)


def test_duplicate_doc_id(tmp_path: Path) -> None:
    corpus = jsonl([*DOCS, {"_id": "d2", "text": "again"}])
    root = make_beir(tmp_path / "c", corpus=corpus)
    problem = assert_error(root, "corpus.jsonl", 4, "duplicate doc id 'd2'")
    assert "first at line 2" in problem.message


def test_duplicate_query_id(tmp_path: Path) -> None:
    queries = jsonl([*QUERIES, {"_id": "q1", "text": "again"}])
    root = make_beir(tmp_path / "c", queries=queries)
    problem = assert_error(root, "queries.jsonl", 3, "duplicate query id 'q1'")
    assert "first at line 1" in problem.message


@pytest.mark.parametrize(
    ("row", "fragment"),
    [
        ("q1\td1", "expected 3 tab-separated columns"),
        ("q1 d1 1", "found 1"),
        ("q1\t0\td1\t1", "TREC"),
        ("q1\td1\tyes", "score 'yes' is not an integer"),
        ("q1\td1\t1.5", "not an integer"),
        ("q7\td1\t1", "query id 'q7' is not in the queries file"),
        ("q1\td7\t1", "doc id 'd7' is not in the corpus"),
        ("q1\td1\t1", "duplicate judgement"),
    ],
)
def test_bad_qrels_row(tmp_path: Path, row: str, fragment: str) -> None:
    root = make_beir(tmp_path / "c", qrels={"test": QRELS + row + "\n"})
    assert_error(root, "qrels/test.tsv", 5, fragment)


def test_non_integer_score_on_first_row_is_not_mistaken_for_a_header(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c", qrels={"test": "q1\td1\thigh\nq2\td2\t1\n"})
    assert_error(root, "qrels/test.tsv", 1, "not an integer")


def test_queries_tsv_row_without_tab(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    write(root / "docs" / "a.txt", "Cats purr.")
    write(root / "queries.tsv", "q1\tpurring\nq2 barking\n")
    write(root / "qrels" / "test.tsv", "q1\ta.txt\t1\n")
    assert_error(root, "queries.tsv", 2, "expected 'query id<TAB>query text'")


@pytest.mark.parametrize(
    ("file", "bad_line", "line"),
    [
        ("corpus.jsonl", b'{"_id": "d4", "text": "caf\xe9"}\n', 4),
        ("queries.jsonl", b'{"_id": "q3", "text": "na\xefve"}\n', 3),
        ("qrels/test.tsv", b"q1\td3\t\xff1\n", 5),
    ],
)
def test_non_utf8_bytes(tmp_path: Path, file: str, bad_line: bytes, line: int) -> None:
    root = make_beir(tmp_path / "c")
    (root / file).write_bytes((root / file).read_bytes() + bad_line)
    assert_error(root, file, line, "not valid UTF-8")


def test_non_utf8_bytes_in_folder_document(tmp_path: Path) -> None:
    root = tmp_path / "notes"
    write(root / "docs" / "a.txt", b"line one\nline \xff two\n")
    write(root / "queries.tsv", "q1\tpurring\n")
    write(root / "qrels" / "test.tsv", "q1\ta.txt\t1\n")
    assert_error(root, "docs/a.txt", 2, "byte 0xff at column 6")


def test_split_without_judged_queries(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c", qrels={"test": QRELS, "dev": "q1\td1\t0\n"})
    report = validate_readonly(root)
    assert report.split_counts["dev"] == (0, 1)
    assert_error(root, "qrels/dev.tsv", None, "no judged queries")


def test_wrong_ids_do_not_also_claim_no_judged_queries(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c", qrels={"test": "q1\td1\t1\n", "dev": "q1\td9\t1\n"})
    assert_error(root, "qrels/dev.tsv", 1, "doc id 'd9' is not in the corpus")


def test_missing_qrels_folder(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c", qrels={})
    assert_error(root, "qrels", None, "expected a qrels/ folder")


def test_qrels_folder_without_split_files(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c", qrels={})
    write(root / "qrels" / "test.txt", QRELS)
    report = validate_readonly(root)
    assert any("must be named <split>.tsv" in w.message for w in report.warnings)
    assert_error(root, "qrels", None, "no <split>.tsv files")


def test_missing_corpus_file(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c")
    (root / "corpus.jsonl").unlink()
    assert_error(root, "", None, "expected corpus.jsonl or corpus.jsonl.gz")


def test_missing_queries_file(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c")
    (root / "queries.jsonl").unlink()
    assert_error(root, "", None, "no queries file")


def test_two_corpus_files_are_ambiguous(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c")
    write(root / "corpus.jsonl.gz", gzip.compress(jsonl(DOCS).encode()))
    assert_error(root, "", None, "keep only one")


def test_path_that_is_not_a_directory(tmp_path: Path) -> None:
    problem = only_error(validate_corpus(tmp_path / "nowhere"))
    assert "not a directory" in str(problem)
    assert not (tmp_path / "nowhere").exists()


def test_many_problems_in_one_file_are_summarised(tmp_path: Path) -> None:
    rows = "".join(f"q1\tmissing{i}\t1\n" for i in range(MAX_PROBLEMS_PER_FILE + 5))
    report = validate_readonly(make_beir(tmp_path / "c", qrels={"test": QRELS + rows}))
    assert len(report.errors) == MAX_PROBLEMS_PER_FILE + 1
    assert report.errors[-1].message == "5 more problems not listed"


def test_load_error_counts_the_other_errors(tmp_path: Path) -> None:
    root = make_beir(tmp_path / "c", qrels={"test": QRELS + "q7\td1\t1\nq1\td7\t1\n"})
    with pytest.raises(CorpusError, match=r"test\.tsv:5: .*and 1 more; run `workbench validate"):
        load_corpus(root)


# --- the corpora shipped in the repository -----------------------------------------------------


def test_scifact_demo_loads() -> None:
    report = validate_corpus(CORPORA / "scifact-demo")
    assert report.ok and report.problems == ()
    assert report.split_counts == {"test": (150, 179), "train": (150, 165)}
    corpus = report.corpus
    assert corpus is not None and len(corpus.documents) == 1000 and len(corpus.queries) == 300
    assert not set(corpus.judged_queries("test")) & set(corpus.judged_queries("train"))


def test_adi_loads() -> None:
    corpus = load_corpus(CORPORA / "adi")
    assert (len(corpus.documents), len(corpus.queries)) == (82, 35)
    assert corpus.splits() == ["test"]
    assert len(corpus.judged_queries("test")) == 35
    assert sum(len(grades) for grades in corpus.split_qrels("test").values()) == 170


# ---- documents alone: indexing and search need no queries or qrels -------------------------------


def test_documents_alone_load_from_a_corpus_jsonl_file_or_its_folder(tmp_path: Path) -> None:
    from workbench.retrieval.corpus import load_documents

    write(tmp_path / "kb" / "corpus.jsonl", jsonl(DOCS))
    for path in (tmp_path / "kb", tmp_path / "kb" / "corpus.jsonl"):
        corpus = load_documents(path)
        assert list(corpus.documents) == ["d1", "d2", "d3"]
        assert corpus.documents["d1"].title == "Cats" and corpus.queries == {} and corpus.splits() == []
    assert load_documents(tmp_path / "kb").fingerprint == load_corpus(make_beir(tmp_path / "full")).fingerprint


def test_documents_alone_load_from_a_folder_of_text_files(tmp_path: Path) -> None:
    from workbench.retrieval.corpus import load_documents

    write(tmp_path / "kb" / "guide.md", "# Setup\nRun the installer.")
    write(tmp_path / "kb" / "faq" / "billing.txt", "Invoices go out monthly.")
    write(tmp_path / "kb" / "image.png", b"\x89PNG")
    write(tmp_path / "kb" / ".git" / "notes.txt", "not a document")
    corpus = load_documents(tmp_path / "kb")
    assert list(corpus.documents) == ["faq/billing.txt", "guide.md"]
    assert corpus.documents["guide.md"].text == "# Setup\nRun the installer."
    # A plain-layout folder (docs/ inside) reads its docs/ folder, as load_corpus does.
    write(tmp_path / "plain" / "docs" / "a.txt", "Alpha.")
    assert list(load_documents(tmp_path / "plain").documents) == ["a.txt"]


def test_documents_alone_name_the_bad_line(tmp_path: Path) -> None:
    from workbench.retrieval.corpus import load_documents

    write(tmp_path / "kb" / "corpus.jsonl", jsonl(DOCS[:1]) + "{not json\n")
    with pytest.raises(CorpusError, match=r"corpus.jsonl:2: malformed JSON"):
        load_documents(tmp_path / "kb")
    with pytest.raises(CorpusError, match="not found"):
        load_documents(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match=r"no \.txt or \.md files"):
        load_documents(tmp_path / "empty")


def test_evaluation_still_needs_judgements_and_says_so_in_one_line(tmp_path: Path) -> None:
    write(tmp_path / "kb" / "corpus.jsonl", jsonl(DOCS))
    with pytest.raises(CorpusError) as raised:
        load_corpus(tmp_path / "kb")
    message = str(raised.value)
    assert "\n" not in message and "and 1 more" not in message
    assert "no queries file and no qrels/ folder" in message and "workbench index" in message


@pytest.mark.parametrize("kind", ["file", "folder"])
@pytest.mark.parametrize("layout", ["kb", "plain"])
def test_a_symlink_out_of_a_docs_folder_is_refused(tmp_path: Path, kind: str, layout: str) -> None:
    from workbench.retrieval.corpus import load_documents

    write(tmp_path / "secret" / "passwords.txt", "root:hunter2")
    docs = tmp_path / "kb" if layout == "kb" else tmp_path / "plain" / "docs"
    write(docs / "guide.md", "# Setup\nRun the installer.")
    target = tmp_path / "secret" / "passwords.txt" if kind == "file" else tmp_path / "secret"
    link = docs / ("linked.txt" if kind == "file" else "linked")
    link.symlink_to(target, target_is_directory=kind == "folder")
    with pytest.raises(CorpusError) as raised:
        load_documents(tmp_path / layout)
    message = str(raised.value)
    assert "linked" in message and "outside" in message and "\n" not in message
    assert "hunter2" not in message


def test_a_symlink_that_stays_inside_a_docs_folder_is_read(tmp_path: Path) -> None:
    from workbench.retrieval.corpus import load_documents

    write(tmp_path / "kb" / "guide.md", "Run the installer.")
    (tmp_path / "kb" / "alias.md").symlink_to(tmp_path / "kb" / "guide.md")
    assert sorted(load_documents(tmp_path / "kb").documents) == ["alias.md", "guide.md"]


def test_an_empty_queries_file_without_qrels_counts_as_documents_alone(tmp_path: Path) -> None:
    from workbench.retrieval.corpus import has_judgements

    write(tmp_path / "kb" / "corpus.jsonl", jsonl(DOCS))
    assert not has_judgements(tmp_path / "kb")
    write(tmp_path / "kb" / "queries.jsonl", "\n  \n")
    assert not has_judgements(tmp_path / "kb")
    with pytest.raises(CorpusError, match="no queries file and no qrels/ folder.*workbench synthesize"):
        load_corpus(tmp_path / "kb")
    write(tmp_path / "kb" / "queries.jsonl", '{"_id": "q1", "text": "cats"}\n')
    assert has_judgements(tmp_path / "kb")  # now a judged corpus, whose missing qrels/ is an error
    with pytest.raises(CorpusError, match="qrels"):
        load_corpus(tmp_path / "kb")
