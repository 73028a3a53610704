"""Tests of workbench/synthesis/generators.py with the real bundled GGUF: in-process through
llama-cpp-python, and behind llama-cpp-python's own OpenAI-compatible server (see conftest.py)."""

from __future__ import annotations

import pytest
from llama_server import API_KEY, SERVED_NAME, free_port

from workbench.errors import ConfigError, ModelError
from workbench.synthesis.generators import GeneratorSpec, LlamaCppGenerator, OpenAICompatibleGenerator, open_generator
from workbench.synthesis.prompt import Prompt, built_in_examples, cut_passage, examples_for, read_question

pytestmark = pytest.mark.extra("synth")


def adi_prompt(adi, doc_id: str = "3") -> Prompt:
    return Prompt(examples_for(built_in_examples(), 2, 0), cut_passage(adi.documents[doc_id].full_text, 1000))


def test_the_bundled_model_writes_a_question_about_an_adi_passage(adi, llama_generator):
    request = llama_generator.request(adi_prompt(adi))
    assert request["prompt"].endswith("Question:") and request["temperature"] == 0.0
    answer = llama_generator.complete(request)
    question = read_question(answer)
    assert len(question.split()) >= 3, answer
    assert "\n" not in answer.strip()  # the completion stops at the end of the line
    assert llama_generator.complete(request) == answer  # greedy: the same request, the same answer
    assert len(llama_generator.fingerprint) == 16


def test_a_missing_or_broken_model_file_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no such model file"):
        LlamaCppGenerator(tmp_path / "absent.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF but not really" * 100)
    with pytest.raises(ModelError, match="cannot load it as a GGUF model"):
        LlamaCppGenerator(broken)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (GeneratorSpec(api="chat"), "--api chat needs --endpoint"),
        (GeneratorSpec(api="fax"), "--api must be"),
        (GeneratorSpec(endpoint="http://127.0.0.1:1/v1"), "--endpoint needs --model"),
        (GeneratorSpec(model="m", endpoint="127.0.0.1:8080"), "http:// or https://"),
    ],
)
def test_impossible_generator_options_are_config_errors(spec, message):
    with pytest.raises(ConfigError, match=message):
        open_generator(spec)


def test_the_endpoint_answers_like_the_in_process_model(adi, server, llama_generator):
    generator = OpenAICompatibleGenerator(server.url, SERVED_NAME, "completions", API_KEY)
    prompt = adi_prompt(adi)
    request = generator.request(prompt)
    assert request["model"] == SERVED_NAME and request["stop"] == ["\n"]
    answer = generator.complete(request)
    assert len(read_question(answer).split()) >= 3, answer
    # The same weights, prompt and greedy decoding: the server's answer is the in-process one.
    assert answer == llama_generator.complete(llama_generator.request(prompt))
    assert generator.description["api_key_set"] is True
    assert API_KEY not in str(generator.description)


def test_the_chat_api_of_the_endpoint_answers(adi, server):
    generator = OpenAICompatibleGenerator(server.url, SERVED_NAME, "chat", API_KEY)
    request = generator.request(adi_prompt(adi))
    assert request["messages"][-1]["content"].startswith("Passage: ")
    assert generator.complete(request).strip()


def test_endpoint_fingerprints_differ_by_model_and_api(server):
    completions = OpenAICompatibleGenerator(server.url, SERVED_NAME, "completions", API_KEY)
    chat = OpenAICompatibleGenerator(server.url, SERVED_NAME, "chat", API_KEY)
    assert completions.fingerprint != chat.fingerprint


def test_an_unknown_served_model_names_the_served_ones(server):
    with pytest.raises(ModelError, match=f"model 'gpt-none' is not served here; it serves: {SERVED_NAME}"):
        OpenAICompatibleGenerator(server.url, "gpt-none", "completions", API_KEY)


def test_a_missing_or_wrong_key_is_refused_before_any_question(server, monkeypatch):
    monkeypatch.delenv("WORKBENCH_TEST_KEY", raising=False)
    with pytest.raises(ModelError, match=r"HTTP 401, the key was refused; set the key in \$WORKBENCH_TEST_KEY"):
        open_generator(GeneratorSpec(SERVED_NAME, server.url, "completions", "WORKBENCH_TEST_KEY"))
    monkeypatch.setenv("WORKBENCH_TEST_KEY", "wrong")
    with pytest.raises(ModelError, match="HTTP 401"):
        open_generator(GeneratorSpec(SERVED_NAME, server.url, "completions", "WORKBENCH_TEST_KEY"))
    monkeypatch.setenv("WORKBENCH_TEST_KEY", API_KEY)
    assert (
        open_generator(GeneratorSpec(SERVED_NAME, server.url, "completions", "WORKBENCH_TEST_KEY")).model == SERVED_NAME
    )


def test_an_unreachable_endpoint_is_a_model_error():
    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    with pytest.raises(ModelError, match=f"cannot reach {url}/models"):
        OpenAICompatibleGenerator(url, "any", "completions", None)
