#!/usr/bin/env python3
"""gen_items.py - write the bundled sample data for ollama-classify:
items.jsonl, items.csv (same items, RFC 4180 quoting) and labels.txt.

Deterministic (a fixed seed, templates, no clock), standard library only:
    python3 tests/data/gen_items.py [OUTDIR] [--count N]

Each item looks like a support ticket or a short news-style line. About
half of them hold their gold label word literally ("... a billing
question ..."), and no other label word, so a simulator that answers "the
label word found in the text" labels them right; the others hold no label
word at all (no substring either: no "debug", "accounts", "features").
"""
import csv
import json
import os
import random
import sys

LABELS = ["billing", "bug", "feature", "account", "shipping", "praise"]

# Texts that name their label. {w} is the label word.
WITH_WORD = {
    "billing": [
        "I have a billing question about invoice #{n}: I was charged twice this month.",
        "Your billing page shows ${a}.00 but my plan costs ${b}.00, please check.",
        "billing: the receipt for order {n} is missing the VAT number",
        "Who do I talk to about billing? The card ending {n4} was declined, yet charged.",
        "Small billing issue, the refund of ${a} from last week never arrived",
    ],
    "bug": [
        "Found a bug: the app crashes when I open the settings screen on version 2.{m}.",
        "bug report - export to PDF produces an empty file since yesterday",
        "Clicking \"Save\" twice creates duplicate entries, looks like a bug.",
        "There is a bug in the search box, typing {n} returns nothing, even though it exists",
        "Minor bug: the date picker shows the wrong month in the {city} time zone",
    ],
    "feature": [
        "Feature idea: let me schedule reports to go out every Monday morning.",
        "Could you add a dark mode? That feature would help a lot at night.",
        "feature request: export to CSV, with headers, quotes and commas handled",
        "Is a \"bulk edit\" feature on the roadmap? We have {n} records to change.",
        "One feature I miss: keyboard shortcuts for the common actions",
    ],
    "account": [
        "I cannot log in to my account, the reset link has expired.",
        "Please close my account and delete my data, thanks.",
        "How do I change the email address on my account to a new one?",
        "My account was locked after {m} wrong passwords, can you unlock it?",
        "Two-factor codes stopped working for my account after I changed phones",
    ],
    "shipping": [
        "Where is my parcel? Order {n} shows shipping label created for {m} days now.",
        "shipping to {city} takes too long, two weeks so far",
        "Do you offer express shipping to {city}? I need it by Friday.",
        "The shipping cost of ${a}.99 was not shown until checkout, \"surprise\"!",
        "Box arrived crushed, shipping partner left it in the rain",
    ],
    "praise": [
        "Just wanted to praise your support team, Anna solved it in five minutes!",
        "Huge praise for the new update, it is so much faster.",
        "All praise to whoever designed the onboarding, it was painless.",
        "praise where it is due: the delivery came a day early to {city}",
        "No complaints, only praise: {m} years with you and still happy",
    ],
}

# Texts that do not name their label: no label word, not even inside a word.
WITHOUT_WORD = {
    "billing": [
        "I was charged ${a}.00 twice for the same order, please refund one.",
        "Why did my subscription price go up from ${b} to ${a} without notice?",
        "The invoice for March lists {m} seats, we only have {n4}.",
        "My card was declined but the money left my bank anyway.",
        "Can I pay yearly instead of monthly, and get a discount?",
    ],
    "bug": [
        "The page freezes after I upload a photo larger than {m} MB.",
        "Error 500 when saving a draft, every single time.",
        "Notifications arrive twice, once with the wrong name.",
        "After the update, the \"Undo\" button does nothing at all.",
        "The mobile app shows a blank screen on startup since version 4.{m}",
    ],
    "feature": [
        "It would be great to filter the list by tag, and to save that filter.",
        "Please let us invite guests who can only read, not edit.",
        "Could the calendar sync both ways with Google, not only one way?",
        "Wish list: an API endpoint to fetch all orders since a date.",
        "Any plans to support more languages, like Polish or Thai?",
    ],
    "account": [
        "I forgot my password and the reset email never comes.",
        "How do I transfer ownership of the workspace to a colleague?",
        "Someone logged in from {city}, that was not me, help!",
        "I want to change my username, is that possible?",
        "Please merge my two profiles, I signed up twice by mistake",
    ],
    "shipping": [
        "My parcel has been stuck in customs in {city} for {m} days.",
        "The tracking number {n} does not work on the carrier's site.",
        "Can you deliver to a pick-up point instead of my home address?",
        "Order {n} arrived, but two items were missing from the box.",
        "How much does delivery to {city} cost for a {m} kg package?",
    ],
    "praise": [
        "Thank you so much, this tool saved our team hours every week!",
        "Great job on the redesign, it looks clean and it is fast.",
        "Your agent was patient and kind, five stars from me.",
        "Love it. Simple, reliable, and the price is fair.",
        "Best purchase this year, \"it just works\", as they say",
    ],
}

CITIES = ["Lyon", "Porto", "Kraków", "Osaka", "Denver", "Cape Town", "Tallinn", "Bergen"]


def fill(template, rng):
    return template.format(n=rng.randint(10000, 99999), n4=rng.randint(1000, 9999),
                           m=rng.randint(2, 9), a=rng.randint(10, 99), b=rng.randint(100, 199),
                           city=rng.choice(CITIES), w="")


def check(text, gold, with_word):
    low = text.lower()
    found = [lab for lab in LABELS if lab in low]
    want = [gold] if with_word else []
    if found != want:
        raise SystemExit("template problem: %r holds %r, want %r" % (text, found, want))


def make_items(count, seed=4):
    rng = random.Random(seed)
    items = []
    for i in range(count):
        gold = LABELS[i % len(LABELS)]
        with_word = rng.random() < 0.5
        pool = (WITH_WORD if with_word else WITHOUT_WORD)[gold]
        text = fill(rng.choice(pool), rng)
        if i % 300 == 7:  # a few tickets written over two lines
            text = text + "\nSent from my phone"
        check(text, gold, with_word)
        items.append({"id": "t%04d" % (i + 1), "text": text, "gold": gold})
    return items


def main():
    args = sys.argv[1:]
    count = 1525
    if "--count" in args:
        k = args.index("--count")
        count = int(args[k + 1])
        del args[k:k + 2]
    out = args[0] if args else os.path.dirname(os.path.abspath(__file__))
    items = make_items(count)
    with open(os.path.join(out, "items.jsonl"), "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps(it, ensure_ascii=False) + "\n")
    with open(os.path.join(out, "items.csv"), "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["id", "text", "gold"])
        for it in items:
            w.writerow([it["id"], it["text"], it["gold"]])
    with open(os.path.join(out, "labels.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(LABELS) + "\n")


if __name__ == "__main__":
    main()
