#!/usr/bin/env python3
"""Writes the contacts extraction task of benches/draft.rs: a free-text
note in, {"name", "email", "phone", "city"} out (a missing field is null).
Deterministic (seeded), so the files in git are what this prints."""
import json
import random

rng = random.Random(15)
first = ["Maria", "Tom", "Aisha", "Kenji", "Olga", "Pedro", "Lena", "Samir", "Grace", "Ivan",
         "Nora", "Yusuf", "Chloe", "Diego", "Hana", "Luca", "Zara", "Omar", "Freya", "Raj"]
last = ["Lopez", "Becker", "Khan", "Sato", "Ivanova", "Silva", "Novak", "Haddad", "Kim",
        "Petrov", "Olsen", "Demir", "Martin", "Rossi", "Park", "Weber", "Costa", "Ali"]
cities = ["Lisbon", "Berlin", "Osaka", "Toronto", "Madrid", "Oslo", "Austin", "Porto", "Lyon",
          "Seoul", "Dublin", "Cairo"]
domains = ["example.com", "mail.example.org", "corp.example.net"]
templates = [
    "Reach {name} at {email} or {phone}. Based in {city}.",
    "New lead: {name} ({city}), email {email}, phone {phone}.",
    "Please add {name} to the list. Contact: {email}, tel. {phone}, lives in {city}.",
    "{name} from {city} called; call back on {phone} or write to {email}.",
    "Met {name} in {city} today. Email: {email}.",
    "Contact card - {name}, {phone}, {email}",
    "Forwarding {name}'s details: phone {phone}, office in {city}.",
]


def row():
    name = f"{rng.choice(first)} {rng.choice(last)}"
    user = name.lower().replace(" ", ".")
    email = f"{user}@{rng.choice(domains)}"
    phone = f"+1-555-{rng.randint(100, 999)}-{rng.randint(1000, 9999)}"
    city = rng.choice(cities)
    t = rng.choice(templates)
    text = t.format(name=name, email=email, phone=phone, city=city)
    out = {
        "name": name,
        "email": email if "{email}" in t else None,
        "phone": phone if "{phone}" in t else None,
        "city": city if "{city}" in t else None,
    }
    return {"input": text, "output": json.dumps(out, separators=(",", ":"))}


rows = [row() for _ in range(56)]
with open("examples.jsonl", "w") as f:
    for r in rows[:44]:
        f.write(json.dumps(r) + "\n")
with open("tests.jsonl", "w") as f:
    for r in rows[44:]:
        f.write(json.dumps(r) + "\n")
