"""Judged queries from documents alone: a generator writes a question each sampled passage answers.

prompt.py (passages and few-shot prompts) → generators.py (in-process GGUF or an OpenAI-compatible
endpoint) → filters.py (pure: length, copies, duplicates, round trip) → writer.py (a BEIR folder
with a ``synthetic`` split and a card); synthesize.py runs them in that order.
"""
