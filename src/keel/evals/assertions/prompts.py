"""The judges' prompts, versioned: a verdict records `<type>@<version>`, so a changed prompt is a new
version and scores from different prompts are never compared as if they were one. Each asks for one JSON
object, which `judged.py` reads from the judge's answer (tolerating prose or a code fence around it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class JudgePrompt:
    name: str
    version: int
    system: str
    user: str  # `{output}`, `{rubric}`, `{question}`, `{reference}`, `{context}` are filled in

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


LLM_RUBRIC = JudgePrompt(
    "llm-rubric",
    1,
    "You grade an output against a rubric. The output passes when the rubric's statement is true of it. "
    'Reply with one JSON object and nothing else: {"reason": string, "pass": boolean, "score": number between 0 and 1}.',
    "<Output>\n{output}\n</Output>\n<Rubric>\n{rubric}\n</Rubric>",
)

FACTUALITY = JudgePrompt(
    "factuality",
    1,
    "You compare a submitted answer with an expert answer to a question, ignoring style, grammar and "
    "punctuation. Choose one category: (A) the submission is a subset of the expert answer and consistent "
    "with it; (B) it is a superset and consistent; (C) it has all the same details; (D) it disagrees with "
    "the expert answer; (E) the answers differ but the differences do not matter for factuality. "
    'Reply with one JSON object and nothing else: {"category": "A"|"B"|"C"|"D"|"E", "reason": string}.',
    "[Question]: {question}\n[Expert]: {reference}\n[Submission]: {output}",
)

ANSWER_RELEVANCE = JudgePrompt(
    "answer-relevance",
    1,
    "Given an answer, write three different questions that it answers. "
    'Reply with one JSON object and nothing else: {"questions": [string, string, string]}.',
    "<Answer>\n{output}\n</Answer>",
)

CONTEXT_FAITHFULNESS = JudgePrompt(
    "context-faithfulness",
    1,
    "Split the answer into its factual statements, then decide for each whether the context supports it. "
    'Reply with one JSON object and nothing else: {"statements": [{"statement": string, "supported": boolean}]}.',
    "<Question>\n{question}\n</Question>\n<Context>\n{context}\n</Context>\n<Answer>\n{output}\n</Answer>",
)

CONTEXT_RECALL = JudgePrompt(
    "context-recall",
    1,
    "Split the reference answer into sentences, then decide for each whether it can be attributed to the "
    'context. Reply with one JSON object and nothing else: {"sentences": [{"sentence": string, "attributed": boolean}]}.',
    "<Context>\n{context}\n</Context>\n<Reference>\n{reference}\n</Reference>",
)

ALL = (LLM_RUBRIC, FACTUALITY, ANSWER_RELEVANCE, CONTEXT_FAITHFULNESS, CONTEXT_RECALL)
