"""Write train.jsonl and test.jsonl: short arithmetic word problems, the example dataset of the README's
"Your own task" section.

    python examples/word_problems/make_data.py                       # rewrites both files, byte for byte the same
    python examples/word_problems/make_data.py --slip 0.7 --out /tmp/harder   # a more careless helper, elsewhere

Each row is one JSON object with three columns:

``prompt``      the problem, under 50 characters: "Ann has 3 pens and gets 4 more. How many?"
``completion``  what a helper wrote after it, the demonstration SFT imitates: "7"
``answer``      the right answer, what the reward functions check (rewards.py): "7"

Three kinds of problem, in equal shares: adding (1..10 + 1..10), taking away (3..12 minus less) and
multiplying (2..6 bags of 2..6). The helper who wrote the training completions was in a hurry: on
half of the taking-away problems they wrote the number given away instead of the number left, and on
half of the multiplying problems they added the two numbers. Adding they always got right.

So ``completion`` and ``answer`` differ on about a third of the training rows, which is the point of
the example: SFT learns the helper's habits along with the arithmetic, and GRPO, rewarded by the
answer, unlearns the habits. The held-out rows (test.jsonl) were written with care (completion =
answer), and none of their prompts appears among the training rows.
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

NAMES = ["Ann", "Bob", "Cat", "Dan", "Eve", "Fay", "Gus", "Ivy", "Jo", "Kim", "Lee", "Max", "Ned", "Pam",
         "Raj", "Sue", "Tom", "Uma", "Val", "Zoe"]
THINGS = ["pens", "eggs", "cards", "coins", "books", "cups", "hats", "toys", "plums", "shells"]
SLIP = 0.5                                   # how often the helper slips on taking away and on multiplying
TRAIN_ROWS, TEST_ROWS, SEED = 2400, 200, 0
HERE = Path(__file__).resolve().parent


def problem(rng: random.Random, slip_rate: float = SLIP) -> tuple[str, int, int]:
    """(prompt, right answer, the hurried helper's answer)."""
    who, what, kind = rng.choice(NAMES), rng.choice(THINGS), rng.choice(["add", "take", "times"])
    slip = rng.random() < slip_rate
    if kind == "add":
        a, b = rng.randint(1, 10), rng.randint(1, 10)
        return f"{who} has {a} {what} and gets {b} more. How many?", a + b, a + b
    if kind == "take":
        a = rng.randint(3, 12)
        b = rng.randint(1, a - 1)
        return f"{who} has {a} {what} and gives {b} away. How many?", a - b, b if slip else a - b
    a, b = rng.randint(2, 6), rng.randint(2, 6)
    return f"{who} has {a} bags of {b} {what}. How many?", a * b, a + b if slip else a * b


def make_rows(n: int, rng: random.Random, seen: set[str], slip_rate: float) -> list[dict]:
    """``n`` rows whose prompts are not in ``seen`` (and are added to it)."""
    rows = []
    while len(rows) < n:
        prompt, answer, helper = problem(rng, slip_rate)
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"prompt": prompt, "completion": str(helper), "answer": str(answer)})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def main(out: Path = HERE, slip_rate: float = SLIP) -> None:
    rng, seen = random.Random(SEED), set()
    test = make_rows(TEST_ROWS, rng, seen, slip_rate=0.0)     # drawn first, so the training rows avoid them
    train = make_rows(TRAIN_ROWS, rng, seen, slip_rate=slip_rate)
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    slips = sum(r["completion"] != r["answer"] for r in train)
    print(f"wrote {len(train)} training problems ({slips} with the helper's slip) and {len(test)} held-out "
          f"problems to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="folder for train.jsonl and test.jsonl")
    parser.add_argument("--slip", type=float, default=SLIP, help="how often the helper slips (0 to 1)")
    args = parser.parse_args()
    main(args.out, args.slip)
