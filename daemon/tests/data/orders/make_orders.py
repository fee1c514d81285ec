#!/usr/bin/env python3
"""Writes the orders task used by daemon/tests/compile.rs: free-text orders
turned into {"item": ..., "qty": ...}. Deterministic (seeded); run it again
to regenerate examples.jsonl and tests.jsonl byte for byte."""
import json
import random

rng = random.Random(7)
items = ["apple", "banana", "orange", "pear", "mango", "lemon"]
plural = {i: i + "s" for i in items}
words = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
templates = [
    "{n} {p} please",
    "I'd like {n} {p}",
    "can I get {n} {p}?",
    "send me {n} {p}",
    "order {n} {p} for me",
    "we need {n} {p} today",
    "{n} {p}, thanks",
    "put {n} {p} in my basket",
]


def order(i):
    item = items[i % len(items)]
    qty = rng.randint(1, 9)
    n = words[qty - 1] if rng.random() < 0.5 else str(qty)
    text = rng.choice(templates).format(n=n, p=plural[item] if qty > 1 else item)
    out = json.dumps({"item": item, "qty": qty}, separators=(",", ":"))
    return text, item, out


seen = set()
rows = []
i = 0
while len(rows) < 60:
    text, item, out = order(i)
    i += 1
    if text in seen:
        continue
    seen.add(text)
    rows.append((text, item, out))

with open("examples.jsonl", "w") as f:
    for text, _, out in rows[:40]:
        f.write(json.dumps({"input": text, "output": out}) + "\n")
with open("tests.jsonl", "w") as f:
    for text, item, out in rows[40:]:
        test = {
            "input": text,
            "output": out,
            "assert": [{"type": "regex", "value": '"item"\\s*:\\s*"%s"' % item}],
        }
        f.write(json.dumps(test) + "\n")
