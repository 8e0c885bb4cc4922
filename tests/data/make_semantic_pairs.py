"""Writes tests/data/semantic_pairs.tsv: small, synthetic, labelled question pairs for `keel cache calibrate`.

    python tests/data/make_semantic_pairs.py

Made from templates with a fixed seed (no public data set is copied): paraphrases a support bot sees
("How do I cancel my subscription?" / "How can I cancel my subscription?") and the near misses a
semantic cache must refuse: another object or verb, another number, swapped places, an added negation.
"""

from __future__ import annotations

import random
from pathlib import Path

VERBS = ["cancel", "renew", "upgrade", "downgrade", "pause", "transfer", "delete", "export", "reset", "update"]
OBJECTS = [
    "subscription",
    "account",
    "password",
    "billing address",
    "email address",
    "plan",
    "invoice",
    "profile picture",
    "phone number",
    "API key",
    "team workspace",
    "payment method",
]
PLACES = ["New York", "Florida", "London", "Paris", "Berlin", "Tokyo", "Chicago", "Madrid", "Rome", "Boston"]
CURRENCIES = ["USD", "EUR", "GBP", "JPY", "CHF"]
SAME = [
    ("How do I {v} my {o}?", "How can I {v} my {o}?"),
    ("How do I {v} my {o}?", "how do i {v} my {o}"),
    ("What is the best way to {v} my {o}?", "What's the best way to {v} my {o}?"),
    ("Where can I {v} my {o}?", "Where do I {v} my {o}?"),
    ("Can you help me {v} my {o}?", "Could you help me {v} my {o}?"),
    ("How do I {v} my {o}?", "How do I {v} my {o}? Thanks"),
    ("Is it possible to {v} my {o}?", "Is it possible to {v} my {o} online?"),
    ("Steps to {v} my {o}", "What are the steps to {v} my {o}?"),
]
ROUTE_SAME = [
    ("cheap flights from {a} to {b}", "cheap flights from {a} to {b} please"),
    ("How long is the flight from {a} to {b}?", "How long does the flight from {a} to {b} take?"),
]


def pairs(rng: random.Random) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    for _ in range(70):
        v, o = rng.choice(VERBS), rng.choice(OBJECTS)
        a, b = rng.choice(SAME)
        out.append((a.format(v=v, o=o), b.format(v=v, o=o), 1))
    for _ in range(20):
        a, b = rng.sample(PLACES, 2)
        x, y = rng.choice(ROUTE_SAME)
        out.append((x.format(a=a, b=b), y.format(a=a, b=b), 1))
    for _ in range(40):  # another object
        v, (o1, o2) = rng.choice(VERBS), rng.sample(OBJECTS, 2)
        out.append((f"How do I {v} my {o1}?", f"How do I {v} my {o2}?", 0))
    for _ in range(40):  # another verb
        (v1, v2), o = rng.sample(VERBS, 2), rng.choice(OBJECTS)
        out.append((f"How do I {v1} my {o}?", f"How do I {v2} my {o}?", 0))
    for _ in range(25):  # swapped places
        a, b = rng.sample(PLACES, 2)
        out.append((f"cheap flights from {a} to {b}", f"cheap flights from {b} to {a}", 0))
    for _ in range(25):  # another amount, or swapped currencies
        n, m = rng.sample([10, 25, 50, 100, 250, 500, 1000], 2)
        c1, c2 = rng.sample(CURRENCIES, 2)
        second = f"Convert {m} {c1} to {c2}" if rng.random() < 0.5 else f"Convert {n} {c2} to {c1}"
        out.append((f"Convert {n} {c1} to {c2}", second, 0))
    for _ in range(20):  # an added negation
        v, o = rng.choice(VERBS), rng.choice(OBJECTS)
        out.append((f"Should I {v} my {o}?", f"Should I not {v} my {o}?", 0))
    rng.shuffle(out)
    return out


def main() -> None:
    rows = pairs(random.Random(14))
    text = "sentence1\tsentence2\tlabel\n" + "".join(f"{a}\t{b}\t{y}\n" for a, b, y in rows)
    (Path(__file__).parent / "semantic_pairs.tsv").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
