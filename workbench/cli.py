"""The ``workbench`` command: parse, call the library, print. Only ``WorkbenchError`` is caught."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer

from workbench.errors import ConfigError, WorkbenchError
from workbench.retrieval.config import DEFAULT_MODEL

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Tune retrieval pipelines on your documents: chunking, BM25, dense, fusion, re-ranking.",
)
cache_app = typer.Typer(no_args_is_help=True, help="Show or free the content-addressed cache.")
app.add_typer(cache_app, name="cache")

StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help="Folder for caches, study storage and the MLflow store (default: $WORKBENCH_STATE_DIR or ./.workbench).",
    ),
]


def state_dir_path(state_dir: Path | None) -> Path:
    """Returns the absolute state folder of ``--state-dir`` (see ``workbench.state.state_folder``)."""
    from workbench.state import state_folder

    return state_folder(state_dir)


def state_cache(state_dir: Path | None):
    """Returns the ``Cache`` of the state folder of ``--state-dir``."""
    from workbench.retrieval.cache import Cache
    from workbench.state import cache_dir

    return Cache(cache_dir(state_dir_path(state_dir)))


def _console():
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = 160  # logs and pipes: keep table rows on one line
    return console


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def user_errors(command):
    """Turns a ``WorkbenchError`` into one line on stderr and its exit code (2 for bad input, 1 for a fault)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except WorkbenchError as error:
            _fail(str(error), error.exit_code)

    return wrapper


@app.command()
@user_errors
def validate(corpus: Annotated[Path, typer.Argument(help="Corpus folder (BEIR layout or docs/ folder).")]) -> None:
    """Check a corpus: counts per split, then every problem found. Exit 2 if it is unusable."""
    from workbench.retrieval.corpus import validate_corpus

    report = validate_corpus(corpus)
    console = _console()
    if report.corpus is not None:
        console.print(f"{corpus}: {len(report.corpus.documents)} documents, {len(report.corpus.queries)} queries")
    for split, (judged, rows) in sorted(report.split_counts.items()):
        console.print(f"  split {split}: {judged} judged queries, {rows} qrels rows")
    for problem in report.problems:
        console.print(f"{problem.severity}: {problem}", markup=False)
    if not report.ok:
        console.print(f"{len(report.errors)} error(s): corpus not usable")
        raise typer.Exit(code=2)
    console.print(f"ok ({len(report.warnings)} warning(s))")


def _progress_printer():
    """Returns a progress callback that writes stage lines on stderr."""
    from workbench.progress import stage_lines

    return stage_lines(lambda line: typer.echo(line, err=True))


@app.command()
@user_errors
def evaluate(
    config: Annotated[Path, typer.Argument(help="Pipeline config (TOML).")],
    corpus: Annotated[Path, typer.Option("--corpus", help="Corpus folder.")],
    split: Annotated[str, typer.Option("--split", help="Qrels split to evaluate on.")] = "test",
    metrics: Annotated[list[str] | None, typer.Option("--metric", "-m", help="Metric to report (repeatable).")] = None,
    run_out: Annotated[Path | None, typer.Option("--run-out", help="Write the run in TREC format.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write metrics and timings as JSON.")] = None,
    latency_sample: Annotated[int, typer.Option(help="Queries timed one at a time for p50/p95.")] = 50,
    state_dir: StateDir = None,
) -> None:
    """Run a pipeline over one split's judged queries and print its metrics."""
    from workbench.evaluation.experiment import evaluate as evaluate_pipeline
    from workbench.evaluation.metrics import DEFAULT_METRICS, write_trec_run
    from workbench.files import atomic_write_bytes, check_output_file
    from workbench.reporting.tables import metrics_table
    from workbench.state import cache_dir

    for out in (run_out, json_out):
        if out is not None:
            check_output_file(out, overwrite=True, protected=[config])
    result = evaluate_pipeline(
        config,
        corpus,
        split,
        metrics or DEFAULT_METRICS,
        cache_dir=cache_dir(state_dir_path(state_dir)),
        latency_sample=latency_sample,
        progress=_progress_printer(),
    )
    console = _console()
    title = f"{result.pipeline} on {corpus} ({split}, {len(result.run)} queries)"
    console.print(metrics_table(result.evaluation, title))
    console.print(
        f"latency p50 {result.latency.p50_ms:.1f} ms, p95 {result.latency.p95_ms:.1f} ms; "
        f"index build {result.index_build_seconds:.1f} s"
    )
    if run_out is not None:
        write_trec_run(result.run, run_out, tag=result.pipeline)
        console.print(f"run written to {run_out}")
    if json_out is not None:
        payload = {"config": str(config), "corpus": str(corpus), **result.to_dict()}
        atomic_write_bytes(json_out, json.dumps(payload, indent=2).encode())
        console.print(f"metrics written to {json_out}")


@app.command()
@user_errors
def search(
    config: Annotated[Path, typer.Argument(help="Pipeline config (TOML).")],
    query: Annotated[str, typer.Argument(help="Query text.")],
    corpus: Annotated[
        Path, typer.Option("--corpus", help="Documents: a corpus folder, corpus.jsonl, or a folder of .txt/.md files.")
    ],
    k: Annotated[int, typer.Option("-k", help="Documents to show.", min=1)] = 10,
    state_dir: StateDir = None,
) -> None:
    """Run one query through a pipeline and print the ranked documents."""
    from workbench.retriever import Retriever
    from workbench.state import cache_dir

    retriever = Retriever.from_config(
        config, corpus, cache_dir=cache_dir(state_dir_path(state_dir)), progress=_progress_printer()
    )
    hits = retriever.search(query, k=min(k, retriever.max_k))
    console = _console()
    if not hits:
        console.print("no document matches")
    for hit in hits:
        snippet = " ".join(retriever.document(hit.doc_id).full_text.split())[:160]
        console.print(f"{hit.rank:>3}. {hit.score:8.4f}  {hit.doc_id}  {snippet}", markup=False)


Storage = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Optuna storage URL: journal:///path, postgresql://…, sqlite:///path "
        "(default: a journal file under the state folder).",
    ),
]
TrackingUri = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI (default: sqlite under the state folder)."),
]


CacheLocation = Annotated[
    str | None,
    typer.Option(
        "--cache",
        help="Cache every worker shares: a folder all machines mount, or a URL such as s3://bucket/prefix "
        "(default: the study file's `cache`, else the state folder's cache/).",
    ),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        "--ray", metavar="ADDRESS", help="Encode on this Ray cluster: auto, or the head's host:port (default: the study file's `ray`)."
    ),
]


def _check_export_target(config, study_file: Path, out: Path, force: bool, storage, state_dir) -> None:
    """Refuses an export target before any work: one that exists (without --force), a folder, the study's own files."""
    from workbench.files import check_output_file
    from workbench.study.optuna_study import study_locations
    from workbench.study.storage import journal_path

    journal = journal_path(study_locations(config, state_dir_path(state_dir), storage).storage_url)
    check_output_file(out, overwrite=force, protected=[study_file] + ([journal] if journal else []))


@app.command()
@user_errors
def run(
    study_file: Annotated[Path, typer.Argument(help="Study file (TOML).")],
    trials: Annotated[int | None, typer.Option("--trials", min=1, help="Finished trials to reach.")] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", min=1, help="Stop after S seconds.")] = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="Worker processes on this machine sharing the study.")
    ] = 1,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Also write the exported config here, as `workbench export --out` does."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists (never the study file).")] = False,
    cache: CacheLocation = None,
    ray: RayAddress = None,
    state_dir: StateDir = None,
) -> None:
    """Run (or resume) a study: baselines, then trials, then a leaderboard and the best config."""
    from workbench.reporting.plots import write_study_plots
    from workbench.reporting.summary import print_next_steps, print_study_result
    from workbench.study.config import load_study_config, with_cache_and_cluster
    from workbench.study.export import write_export
    from workbench.study.result import save_result, study_result
    from workbench.study.runner import run_study

    config = with_cache_and_cluster(load_study_config(study_file), cache, ray)
    if out is not None:
        _check_export_target(config, study_file, out, force, storage, state_dir)
    console = _console()
    outcome = run_study(
        config,
        state_dir_path(state_dir),
        trials,
        timeout,
        storage,
        tracking_uri,
        workers=workers,
        study_file=study_file.resolve(),
    )
    if outcome.interrupted:
        console.print("interrupted: finished trials are kept; run the same command again to resume")
    result = study_result(outcome.session, outcome.study)
    print_study_result(console, result)
    if result.verdict is not None:

        def write_plots(folder: Path) -> list[Path]:
            written, skipped = write_study_plots(outcome.study, config.metric, folder)
            for reason in skipped:
                console.print(f"plot skipped: {reason}", markup=False)
            return written

        save_result(outcome.session, result, study_file, write_plots)
        exported_to = None
        if out is not None and not outcome.interrupted:
            write_export(result.export.config, dict(result.provenance), out)
            console.print(f"written to {out}")
            exported_to = out
        print_next_steps(console, study_file, outcome.session.locations.tracking_uri, exported_to)
    if outcome.interrupted:
        raise typer.Exit(code=130)


@app.command()
@user_errors
def worker(
    study_file: Annotated[Path, typer.Argument(help="Study file (TOML) of a study started by `workbench run`.")],
    timeout: Annotated[float | None, typer.Option("--timeout", min=1, help="Stop after S seconds.")] = None,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    cache: CacheLocation = None,
    ray: RayAddress = None,
    state_dir: StateDir = None,
) -> None:
    """Join a running study from this or another machine; run trials until it and its nested studies have enough."""
    from workbench.study.attributes import FAIL_ATTR
    from workbench.study.config import load_study_config, with_cache_and_cluster
    from workbench.study.log import one_line
    from workbench.study.optuna_study import study_locations
    from workbench.study.runner import run_worker
    from workbench.study.workers import trial_counts, worker_label

    config = with_cache_and_cluster(load_study_config(study_file), cache, ray)
    state = state_dir_path(state_dir)
    log_file = study_locations(config, state, storage, tracking_uri).log_file
    typer.echo(f"worker {worker_label()} joined study {config.name}")

    def report(study, trial) -> None:
        finished, _ = trial_counts(study)
        if trial.values:
            outcome = f"{config.metric} {trial.values[0]:.4f}"
        else:
            outcome = f"{one_line(trial.user_attrs.get(FAIL_ATTR, ''))} (traceback in {log_file})"
        typer.echo(f"{study.study_name}: trial {trial.number} {trial.state.name} {outcome} ({finished} finished)")

    try:
        run_worker(config, state, timeout, storage, tracking_uri, on_trial_end=report)
    except KeyboardInterrupt:
        typer.echo("interrupted: the running trial is marked failed", err=True)
        raise typer.Exit(code=130) from None
    typer.echo("worker done")


@app.command()
@user_errors
def export(
    study_file: Annotated[Path, typer.Argument(help="Study file (TOML).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the pipeline config.")] = Path("best.toml"),
    trial: Annotated[
        int | None, typer.Option("--trial", help="Export this trial instead of the best (even if a baseline beats it).")
    ] = None,
    tuned: Annotated[
        bool, typer.Option("--tuned", help="Export the tuned pipeline even if the verdict puts a baseline above it.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists (never the study file).")] = False,
    storage: Storage = None,
    state_dir: StateDir = None,
) -> None:
    """Write the best trial's pipeline config as TOML, with provenance and the held-out verdict.

    When the held-out verdict puts a baseline's mean above the tuned pipeline's, that baseline's
    config is written instead (--tuned or --trial keep the tuned trial)."""
    from workbench.reporting.summary import print_export
    from workbench.study.config import load_study_config
    from workbench.study.export import write_export
    from workbench.study.result import study_result
    from workbench.study.session import StudySession

    config = load_study_config(study_file)
    _check_export_target(config, study_file, out, force, storage, state_dir)
    session = StudySession(config, state_dir_path(state_dir), storage, progress=_progress_printer())
    result = study_result(session, trial_number=trial, force_tuned=tuned or trial is not None)
    result.require_verdict()
    write_export(result.export.config, dict(result.provenance), out)
    console = _console()
    print_export(console, result)
    console.print(f"written to {out}")
    if config.heldout_split:
        console.print(
            f"next: workbench evaluate {out} --corpus {config.corpus} --split {config.heldout_split}", markup=False
        )


@app.command()
@user_errors
def report(
    study_file: Annotated[Path, typer.Argument(help="Study file (TOML).")],
    out: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists (never the study file).")] = False,
    storage: Storage = None,
    tracking_uri: TrackingUri = None,
    state_dir: StateDir = None,
) -> None:
    """Write a self-contained HTML report: settings, plots, held-out table, per-query losses."""
    from workbench.files import check_output_file
    from workbench.reporting.html import render_report, write_report
    from workbench.study.config import load_study_config
    from workbench.study.result import study_result
    from workbench.study.session import StudySession

    config = load_study_config(study_file)
    check_output_file(out, overwrite=force, protected=[study_file])
    session = StudySession(config, state_dir_path(state_dir), storage, tracking_uri, progress=_progress_printer())
    result = study_result(session)
    verdict = result.require_verdict()
    write_report(out, render_report(result, verdict.study, session.corpus.queries))
    session.tracker.log_parent_artifacts([out])
    _console().print(f"report written to {out} (also attached to the MLflow study run)")


# Options that train-reranker and train-encoder share.
TrainingCorpus = Annotated[Path, typer.Argument(help="Corpus folder with the training split's qrels.")]
TrainingSplit = Annotated[str, typer.Option("--split", help="Split whose queries train the model.")]
BaseModel = Annotated[str, typer.Option("--base", help="Model id or folder to start from.")]
MaxPairs = Annotated[
    int | None, typer.Option("--max-pairs", min=4, help="Cap on training pairs (4 per relevant document).")
]
HeldoutStudy = Annotated[
    Path | None, typer.Option("--study", help="Study file whose held-out queries must never be trained on.")
]


@app.command("train-reranker")
@user_errors
def train_reranker_command(
    corpus: TrainingCorpus,
    split: TrainingSplit = "train",
    base: BaseModel = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option("--out", help="Folder for the trained model.")] = Path("reranker"),
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 2,
    learning_rate: Annotated[float, typer.Option("--learning-rate", min=1e-7, max=1e-2)] = 1e-4,
    max_length: Annotated[
        int, typer.Option("--max-length", min=16, max=512, help="Tokens per (query, document) pair; longer is cut.")
    ] = 256,
    max_pairs: MaxPairs = None,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    study: HeldoutStudy = None,
    state_dir: StateDir = None,
) -> None:
    """Fine-tune a cross-encoder re-ranker on a split's queries, with BM25 and dense hard negatives."""
    from workbench.files import check_new_folder
    from workbench.retrieval.corpus import load_corpus
    from workbench.training.reranker import train_reranker
    from workbench.training.settings import RerankerSettings

    check_new_folder(out)
    loaded = load_corpus(corpus)
    settings = RerankerSettings(
        base_model=base,
        excluded_query_ids=_queries_never_to_train_on(study, loaded, split),
        epochs=epochs,
        max_pairs=max_pairs,
        learning_rate=learning_rate,
        max_length=max_length,
        seed=seed,
    )
    card = train_reranker(
        loaded, split, out, settings, cache=state_cache(state_dir), progress=_progress_printer()
    )
    console = _console()
    console.print(
        f"trained on {card.pairs} pairs from {card.training_queries} queries in {card.training_seconds} s; "
        f"validation nDCG@10 {card.validation_ndcg_at_10:.4f} "
        f"(the mined candidates in their own order: {card.candidate_order_ndcg_at_10:.4f}); saved to {out}"
    )
    if card.validation_ndcg_at_10 <= card.candidate_order_ndcg_at_10:
        console.print(
            "WARNING: the re-ranker orders the validation candidates worse than BM25 and dense retrieval did; "
            "train on more pairs or epochs (--max-pairs, --epochs, --learning-rate) before using it"
        )
    console.print(f'use it in a config or study: [rerank] model = "{out.resolve()}"', markup=False)


def _queries_never_to_train_on(study: Path | None, corpus, split: str) -> set[str]:
    """Returns the study's held-out queries a trainer must leave out (refusing its held-out split)."""
    from workbench.study.config import load_study_config
    from workbench.study.isolation import queries_never_to_train_on

    if study is not None:
        return queries_never_to_train_on(load_study_config(study), study, corpus, split)
    if split == "test":
        _console().print("warning: training on split 'test'; do not report held-out figures on it")
    return set()


@app.command("train-encoder")
@user_errors
def train_encoder_command(
    corpus: TrainingCorpus,
    split: TrainingSplit = "train",
    base: BaseModel = DEFAULT_MODEL,
    out: Annotated[Path, typer.Option("--out", help="New folder for the trained model.")] = Path("encoder"),
    loss: Annotated[
        str,
        typer.Option(
            "--loss",
            help="mnrl (MultipleNegativesRankingLoss, hard and in-batch negatives) or margin-mse "
            "(distil --teacher's margins).",
        ),
    ] = "mnrl",
    teacher: Annotated[
        str | None,
        typer.Option("--teacher", help="Cross-encoder whose scores margin-mse distils (a re-ranker folder)."),
    ] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1)] = 1,
    learning_rate: Annotated[float, typer.Option("--learning-rate", min=1e-7, max=1e-2)] = 2e-5,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=2, help="Groups (query, relevant, negatives) per step.")
    ] = 16,
    max_length: Annotated[
        int, typer.Option("--max-length", min=16, max=512, help="Tokens per text; longer is cut.")
    ] = 256,
    max_pairs: MaxPairs = None,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    study: HeldoutStudy = None,
    state_dir: StateDir = None,
) -> None:
    """Fine-tune the dense encoder on a split's queries, with BM25 and dense hard negatives."""
    from workbench.files import check_new_folder
    from workbench.retrieval.corpus import load_corpus
    from workbench.training.encoder import LOSS_NAMES, train_encoder
    from workbench.training.settings import EncoderSettings

    if loss not in LOSS_NAMES:
        raise ConfigError(f"--loss: '{loss}' is not one of {', '.join(LOSS_NAMES)}")
    if loss == "margin-mse" and teacher is None:
        raise ConfigError("--loss margin-mse distils a cross-encoder: give --teacher (e.g. a train-reranker folder)")
    check_new_folder(out)
    loaded = load_corpus(corpus)
    settings = EncoderSettings(
        base_model=base,
        excluded_query_ids=_queries_never_to_train_on(study, loaded, split),
        epochs=epochs,
        max_pairs=max_pairs,
        loss=loss,  # type: ignore[arg-type]  # checked against LOSS_NAMES above
        teacher=teacher,
        batch_size=batch_size,
        learning_rate=learning_rate,
        max_length=max_length,
        seed=seed,
    )
    card = train_encoder(
        loaded, split, out, settings, cache=state_cache(state_dir), progress=_progress_printer()
    )
    console = _console()
    console.print(
        f"trained with {card.loss} on {card.groups} groups from {card.training_queries} queries in "
        f"{card.training_seconds} s; validation nDCG@10 {card.validation_ndcg_at_10_best_epoch:.4f} "
        f"(base model: {card.validation_ndcg_at_10_before:.4f}); saved to {out}"
    )
    if card.kept_base_weights:
        console.print(
            "WARNING: no epoch beat the base model on the validation queries, so its weights were saved "
            "unchanged; train on more pairs or epochs (--max-pairs, --epochs, --learning-rate) or another --loss"
        )
    console.print(f'use it in a config or study: model = "{out.resolve()}" (a dense retriever)', markup=False)


@app.command("distill-encoder")
@user_errors
def distill_encoder_command(
    model: Annotated[str, typer.Argument(help="Model id or sentence-transformers folder to distil from.")],
    out: Annotated[
        Path, typer.Option("--out", help="New folder for the static encoder (must not exist, or be empty).")
    ],
    pca_dims: Annotated[
        int, typer.Option("--pca-dims", min=2, help="Dimensions kept by PCA (at most the base model's).")
    ] = 256,
    state_dir: StateDir = None,
) -> None:
    """Distil a static (model2vec) encoder from MODEL: no data, one pass over its vocabulary."""
    from workbench.training.distill import check_distill_output, distill_encoder

    check_distill_output(out.expanduser().resolve())  # before the state folder or any model is touched
    state_dir_path(state_dir)  # where a split-zip base model is assembled
    card = distill_encoder(model, out, pca_dims)
    console = _console()
    console.print(
        f"distilled {card.vocabulary_size} token vectors of {card.dimensions} dimensions from {model} "
        f"in {card.seconds} s; saved to {out}"
    )
    console.print(
        f'use it in a config or study: [[retrievers]] kind = "dense", model = "{out.resolve()}"', markup=False
    )


@app.command()
@user_errors
def synthesize(
    corpus: Annotated[Path, typer.Argument(help="Corpus folder whose documents the questions are written from.")],
    out: Annotated[Path, typer.Option("--out", help="New BEIR folder: the corpus plus a 'synthetic' split.")],
    documents: Annotated[int, typer.Option("--documents", min=1, help="Documents to sample (seeded).")] = 100,
    per_document: Annotated[int, typer.Option("--per-document", min=1, max=20, help="Questions per passage.")] = 1,
    seed: Annotated[int, typer.Option("--seed")] = 42,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="A GGUF file run in-process (default: the bundled gemma3-270m), or with --endpoint the served model name.",
        ),
    ] = None,
    endpoint: Annotated[
        str | None, typer.Option("--endpoint", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:11434/v1.")
    ] = None,
    api: Annotated[str, typer.Option("--api", help="Endpoint API: 'completions' or 'chat'.")] = "completions",
    api_key_env: Annotated[
        str, typer.Option("--api-key-env", help="Environment variable holding the endpoint's API key, if it needs one.")
    ] = "OPENAI_API_KEY",
    examples_split: Annotated[
        str | None,
        typer.Option(
            "--examples-split",
            help="Split whose real queries set the prompt's style (default: 'train' if present, else built-in examples).",
        ),
    ] = None,
    shots: Annotated[int, typer.Option("--shots", min=1, max=6, help="Examples per prompt.")] = 2,
    round_trip: Annotated[
        int,
        typer.Option(
            "--round-trip",
            min=0,
            help="Keep a question only if BM25 or dense ranks its document in the top K (0: off).",
        ),
    ] = 0,
    copy_corpus: Annotated[
        bool, typer.Option("--copy-corpus", help="Copy the documents instead of linking to them.")
    ] = False,
    state_dir: StateDir = None,
) -> None:
    """Write judged queries from documents alone: a generated question per sampled passage, filtered."""
    from workbench.synthesis.generators import GeneratorSpec
    from workbench.synthesis.synthesize import synthesis_settings
    from workbench.synthesis.synthesize import synthesize as synthesize_queries

    settings = synthesis_settings(
        documents=documents,
        per_document=per_document,
        seed=seed,
        shots=shots,
        examples_split=examples_split,
        round_trip_k=round_trip,
        copy_corpus=copy_corpus,
    )
    spec = GeneratorSpec(model, endpoint, api, api_key_env)
    cache = state_cache(state_dir)
    try:
        card = synthesize_queries(corpus, out, spec, settings, cache, _progress_printer())
    except KeyboardInterrupt:
        typer.echo("interrupted: the answers so far are cached; run the same command again to go on", err=True)
        raise typer.Exit(code=130) from None
    console = _console()
    generation = card["generation"]
    console.print(
        f"{card['counts']['generated']} questions from {card['counts']['documents_sampled']} documents "
        f"({generation['asked_now']} asked in {generation['seconds']} s, {generation['from_cache']} from the cache)"
    )
    for step in card["filters"]:
        console.print(f"  {step['name']}: dropped {step['dropped']}, {step['after']} left", markup=False)
    console.print(f"{card['counts']['kept']} judged queries in split 'synthetic' of {out} (card: synthesize.json)")
    console.print(
        f'tune on them: corpus = "{out.resolve()}" and tune_split = "synthetic" in a study file', markup=False
    )


@app.command()
@user_errors
def ui(
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port on 127.0.0.1.")] = 5000,
    tracking_uri: TrackingUri = None,
    state_dir: StateDir = None,
) -> None:
    """Start the MLflow dashboard on 127.0.0.1 against the study store."""
    from workbench.reporting.dashboard import serve_dashboard
    from workbench.state import artifact_root, tracking_db
    from workbench.study.tracking import sqlite_uri

    state = state_dir_path(state_dir)
    serve_dashboard(tracking_uri or sqlite_uri(tracking_db(state)), artifact_root(state), port, _console().print)


@app.command("index")
@user_errors
def index_command(
    config: Annotated[Path, typer.Argument(help="Pipeline config (TOML), e.g. best.toml from `workbench export`.")],
    documents: Annotated[
        Path, typer.Argument(help="Documents: corpus.jsonl, a folder holding one, or a folder of .txt/.md files.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Index folder to write.")],
    update: Annotated[
        bool, typer.Option("--update", help="Update the index at --out in place to hold exactly these documents.")
    ] = False,
    cache: CacheLocation = None,
    ray: RayAddress = None,
    state_dir: StateDir = None,
) -> None:
    """Build a self-contained index folder (config, chunks, BM25 and FAISS indexes, manifest), or update one."""
    from workbench.retrieval.cache import Cache
    from workbench.retrieval.cluster import check_ray_address
    from workbench.retrieval.index import is_index
    from workbench.retriever import Retriever
    from workbench.state import cache_dir

    if ray is not None:
        check_ray_address(ray)
    cache = cache or cache_dir(state_dir_path(state_dir))
    Cache(cache).check()
    console = _console()
    if update:
        from workbench.retrieval.config import load_pipeline_config

        retriever = Retriever.load(out)
        if load_pipeline_config(config) != retriever.config:
            _fail(
                f"{config}: differs from the config the index at {out} was built with; "
                "build a new index (without --update) to change the pipeline"
            )
        summary = retriever.replace_all(documents, cache_dir=cache, ray=ray)
        version = retriever.save(out)
        console.print(f"updated {out} ({version.name}): {summary}", markup=False)
        return
    if is_index(out):
        _fail(f"{out}: already exists; pass --update to update that index, or choose a new folder")
    if out.exists() and not out.is_dir():
        _fail(f"{out}: is a file, not an index folder; choose a new folder for --out")
    if out.exists() and any(out.iterdir()):
        _fail(f"{out}: not empty and not a workbench index; choose a new or empty folder for --out")
    retriever = Retriever.from_config(config, documents, cache_dir=cache, progress=_progress_printer(), ray=ray)
    version = retriever.save(out)
    info = retriever.info()
    console.print(
        f"indexed {info['documents']} documents ({info['chunks']} chunks) into {out} ({version.name})", markup=False
    )
    console.print(f"next: workbench serve {out}", markup=False)


@app.command()
@user_errors
def serve(
    index: Annotated[Path, typer.Argument(help="Index folder written by `workbench index`.")],
    host: Annotated[
        str, typer.Option("--host", help="Interface to bind; 0.0.0.0 exposes it to the network (add --api-key-env).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 8000,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="torch threads for query encoding and re-ranking.")
    ] = 1,
    api_key_env: Annotated[
        str | None,
        typer.Option(
            "--api-key-env",
            metavar="NAME",
            help="Require the key held in environment variable NAME on every request but GET /health "
            "(header `Authorization: Bearer KEY` or `X-API-Key: KEY`; 401 without it).",
        ),
    ] = None,
    info_details: Annotated[
        bool,
        typer.Option(
            "--info-details", help="Let GET /info show absolute paths and the git commit (names only by default)."
        ),
    ] = False,
) -> None:
    """Serve an index over HTTP: POST /search, GET /health, GET /info, the OpenAPI schema at /openapi.json."""
    try:
        from workbench.serving.app import serve as serve_index
        from workbench.serving.guards import api_key_from_env
    except ImportError as error:
        _fail(f"`workbench serve` needs FastAPI and uvicorn: pip install 'workbench[serve]' ({error})")
    api_key = api_key_from_env(api_key_env) if api_key_env is not None else None
    serve_index(
        index,
        host,
        port,
        threads,
        say=lambda line: typer.echo(line, err=True),
        api_key=api_key,
        info_details=info_details,
    )


@cache_app.command("info")
@user_errors
def cache_info(state_dir: StateDir = None) -> None:
    """Show what the cache holds and how much space it takes."""
    cache = state_cache(state_dir)
    sizes = cache.size_by_kind()
    console = _console()
    console.print(f"cache: {cache.root}")
    if not sizes:
        console.print("  empty")
    for kind, (files, size) in sizes.items():
        console.print(f"  {kind}: {files} files, {size / 1e6:.1f} MB")


@cache_app.command("clear")
@user_errors
def cache_clear(state_dir: StateDir = None) -> None:
    """Delete every cache entry (study storage and MLflow runs are kept)."""
    freed = state_cache(state_dir).clear()
    _console().print(f"freed {freed / 1e6:.1f} MB")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
