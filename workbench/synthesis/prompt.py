"""Passages and few-shot prompts: what a generator is shown, and how its answer is read back.

A prompt shows ``shots`` examples (a passage and a question it answers), then the passage to
write a question for. Examples come from a corpus' real queries when it has a split to take them
from, otherwise from ``BUILT_IN_EXAMPLES``. The same prompt renders as plain text for completion
endpoints and base models, and as alternating messages for chat endpoints.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from workbench.retrieval.corpus import Corpus

# Written for this module, on purpose away from the domains of the benchmark collections
# (aeronautics, library science, biomedicine), so they set the form of a question, not its topic.
BUILT_IN_EXAMPLES: tuple[tuple[str, str], ...] = (
    (
        (
            "A write-ahead log records every change before it is applied to the database files. After a crash "
            "the system replays the log: committed transactions are redone and incomplete ones are rolled back."
        ),
        "How does a database recover committed transactions after a crash?",
    ),
    (
        (
            "Coral bleaching starts when sea temperatures stay about one degree above the usual summer maximum "
            "for several weeks. The corals expel the algae that supply most of their energy and starve if the "
            "heat lasts."
        ),
        "What sea temperatures make corals bleach?",
    ),
    (
        (
            "When the central bank raised its policy rate by two percentage points, new mortgage lending fell "
            "by a third within a year, while lending to firms barely changed."
        ),
        "How did mortgage lending respond to the rise in the policy rate?",
    ),
    (
        (
            "The printing press reached Venice in 1469. Within thirty years the city's workshops had printed "
            "more books than any other European city, helped by cheap paper and a large market of scholars."
        ),
        "Why did Venice become the leading centre of early book printing?",
    ),
    (
        (
            "Browning meat above 140 degrees Celsius triggers the Maillard reaction between amino acids and "
            "sugars, which forms hundreds of flavour compounds; boiled meat never gets hot enough for it."
        ),
        "Why does seared meat taste different from boiled meat?",
    ),
    (
        (
            "Under the 1980 convention, a buyer who finds the goods defective must notify the seller within a "
            "reasonable time, or lose the right to rely on the defect."
        ),
        "What happens if a buyer reports defective goods too late?",
    ),
)
EXAMPLE_POOL = len(BUILT_IN_EXAMPLES)  # real-query examples drawn per corpus, as many as built-in ones
QUESTION_LABEL = "Question:"
PASSAGE_LABEL = "Passage:"
CHAT_INSTRUCTION = (
    "You write search queries. For each passage, reply with one question that the passage answers, "
    "in the style of the examples, and nothing else."
)


@dataclass(frozen=True)
class Example:
    passage: str
    question: str
    source: str  # "built-in", or the query id of a real query


@dataclass(frozen=True)
class Prompt:
    examples: tuple[Example, ...]
    passage: str

    def as_text(self) -> str:
        """Returns the prompt for a completion endpoint: examples, then the passage and an open question."""
        blocks = [f"{PASSAGE_LABEL} {ex.passage}\n{QUESTION_LABEL} {ex.question}" for ex in self.examples]
        blocks.append(f"{PASSAGE_LABEL} {self.passage}\n{QUESTION_LABEL}")
        return "\n\n".join(blocks)

    def as_messages(self) -> list[dict[str, str]]:
        """Returns the prompt for a chat endpoint: an instruction, then each example as a user/assistant turn."""
        messages = [{"role": "system", "content": CHAT_INSTRUCTION}]
        for example in self.examples:
            messages.append({"role": "user", "content": f"{PASSAGE_LABEL} {example.passage}"})
            messages.append({"role": "assistant", "content": example.question})
        messages.append({"role": "user", "content": f"{PASSAGE_LABEL} {self.passage}"})
        return messages


def cut_passage(text: str, max_chars: int) -> str:
    """Returns ``text`` on one line with single spaces, cut at the last word boundary within ``max_chars``."""
    flat = " ".join(text.split())
    if len(flat) <= max_chars:
        return flat
    head = flat[: max_chars + 1]  # one character more: a space there means the last word ends exactly at the limit
    return head.rsplit(" ", 1)[0] if " " in head else flat[:max_chars]


def built_in_examples() -> list[Example]:
    """Returns the bundled examples, in their fixed order."""
    return [Example(passage, question, "built-in") for passage, question in BUILT_IN_EXAMPLES]


def real_examples(corpus: Corpus, split: str, seed: int, max_chars: int) -> list[Example]:
    """Returns up to ``EXAMPLE_POOL`` seeded real queries of ``split``, each with a passage of its first relevant document.

    Raises ``CorpusError`` when the split does not exist.
    """
    qrels = corpus.split_qrels(split)
    candidates = []
    for query_id, text in corpus.judged_queries(split).items():
        relevant = sorted(doc_id for doc_id, grade in qrels[query_id].items() if grade > 0)
        passage = cut_passage(corpus.documents[relevant[0]].full_text, max_chars)
        if passage and text.strip():
            candidates.append(Example(passage, " ".join(text.split()), query_id))
    picked = random.Random(seed).sample(candidates, min(EXAMPLE_POOL, len(candidates)))
    return picked


def examples_for(pool: list[Example], shots: int, variant: int) -> tuple[Example, ...]:
    """Returns the ``shots`` examples of the ``variant``-th question per passage: the pool read in turn from ``variant * shots``."""
    if not pool:
        return ()
    return tuple(pool[(variant * shots + offset) % len(pool)] for offset in range(min(shots, len(pool))))


_LABEL = re.compile(r"^\s*(question|q)\s*[:.)-]\s*", re.IGNORECASE)


def read_question(output: str) -> str:
    """Returns the question in a generator's raw output: its first non-empty line, without a label or quotes."""
    for line in output.splitlines():
        line = _LABEL.sub("", line).strip().strip("\"'“”").strip()
        if line.lower().startswith(PASSAGE_LABEL.lower()):
            return ""  # the model skipped the question and went on to a new passage
        if line:
            return line
    return ""
