"""Every name a study writes into Optuna (trial and study user attributes) and MLflow (run tags).

One place, so that the objective, the workers, the tracker, the tables and export read and write
the same keys.
"""

# Optuna trial user attributes
CONFIG_ATTR = "workbench.config"  # the trial's pipeline config, as a TOML-ready dict
BASELINE_ATTR = "workbench.baseline"  # "bm25" or "dense" on a baseline trial
METRICS_ATTR = "workbench.metrics"  # every metric and timing of the trial on the tuning queries
WORSE_ATTR = "workbench.worse_than_baseline"  # primary metric below the best baseline's
DUPLICATE_ATTR = "workbench.duplicate_of"  # number of the earlier trial with the same parameters
WORKER_ATTR = "workbench.worker"  # "host:pid" of the process running it
MLFLOW_RUN_ATTR = "workbench.mlflow_run_id"
FAIL_ATTR = "workbench.fail_reason"  # why the trial failed, one line
ANN_RECALL_ATTR = "workbench.ann_recall"  # retriever name → recall@k of its HNSW/IVF hits against exact search

# Optuna study user attributes
TARGET_ATTR = "workbench.n_trials"  # finished trials the workers aim for
CORPUS_ATTR = "workbench.corpus_fingerprint"  # the corpus every worker must have
HELDOUT_MODE_ATTR = "workbench.heldout"  # "split" or "kfold": how the study's result is judged
EXHAUSTED_ATTR = "workbench.space_exhausted"  # why no new configuration can be tried (a small finite space)
TUNE_QUERIES_ATTR = "workbench.tune_queries"  # digest of the query ids the study tunes on (study/splits.query_digest)

# MLflow run tags (FAIL_ATTR, WORKER_ATTR, WORSE_ATTR, DUPLICATE_ATTR and CORPUS_ATTR are tags too)
ROLE_TAG = "workbench.role"  # "study" on the parent run, "trial" on a child
STUDY_TAG = "workbench.study"
TRIAL_NUMBER_TAG = "workbench.trial_number"
STATE_TAG = "workbench.state"  # RUNNING, COMPLETE, PRUNED or FAIL
CODE_VERSION_TAG = "workbench.code_version"
PRUNED_TAG = "workbench.pruned"  # why the pruner stopped the trial
EXPORTED_TAG = "workbench.exported"  # on the parent run: "tuned", or the baseline exported instead ("bm25", "dense")
EXPORT_REASON_TAG = "workbench.export_reason"  # on the parent run: why, in one sentence with the figures

LATENCY_KEY = "latency_mean_ms"  # the metric a latency objective minimises
ANN_RECALL_METRIC = "ann_recall"  # MLflow metric prefix: ann_recall.<retriever name>
