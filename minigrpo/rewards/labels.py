"""Human feedback: good/bad and stepwise labels in JSONL, as a reward and as preference pairs.

One label per line::

    {"prompt": "47+85=", "completion": "132", "label": "good"}
    {"prompt": "47+85=", "completion": "122", "label": "bad", "annotator": "ana"}
    {"prompt": "7+5-3+8=", "completion": "12,9,16", "steps": [1, 1, 0]}

``label`` is good/bad (also 1/0, true/false, 👍/👎); ``steps`` labels each step of a multi-step answer
(1 right, 0 wrong, null unsure). ``widgets.LabellingPanel`` writes the same file from a notebook.

Labels serve twice: ``LabelReward`` turns them into a reward component (an unlabelled completion is
*not applicable*, so it is left out of the baseline rather than scored 0), and ``labels_to_pairs``
turns them into preference pairs (each good completion of a prompt preferred to each bad one) for
``reward_model.train_reward_model`` — which then scores the completions nobody labelled.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from minigrpo.rewards.preferences import PreferencePair

GOOD = {"good", "1", "true", "yes", "👍", "up"}
BAD = {"bad", "0", "false", "no", "👎", "down"}


@dataclass(frozen=True)
class Label:
    prompt: str
    completion: str
    good: bool | None = None          # None: only step labels were given
    steps: tuple | None = None        # per-step labels (1.0 / 0.0 / None)
    annotator: str | None = None


def _parse_good(value, where: str) -> bool:
    key = str(value).strip().lower() if not isinstance(value, bool) else str(value).lower()
    if key in GOOD:
        return True
    if key in BAD:
        return False
    raise ValueError(f"{where}: label={value!r} is not allowed; use 'good'/'bad' (or 1/0, true/false, 👍/👎)")


def parse_label(record, where: str) -> Label:
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a label must be a JSON object, got {type(record).__name__}")
    missing = [k for k in ("prompt", "completion") if not isinstance(record.get(k), str)]
    if missing:
        raise ValueError(f"{where}: missing or non-string field(s) {missing}; a label needs 'prompt' and "
                         "'completion' strings")
    if "label" not in record and "steps" not in record:
        raise ValueError(f"{where}: needs 'label' (good/bad) or 'steps' (a list of 1/0/null)")
    good = _parse_good(record["label"], where) if "label" in record else None
    steps = record.get("steps")
    if steps is not None:
        if not isinstance(steps, list) or not all(s is None or (isinstance(s, (int, float)) and not isinstance(s, bool)
                                                                 and s == s and abs(s) != float("inf")) for s in steps):
            raise ValueError(f"{where}: steps={steps!r} must be a list of numbers (1 right, 0 wrong) or null")
        steps = tuple(None if s is None else float(s) for s in steps)
    return Label(record["prompt"], record["completion"], good, steps, record.get("annotator"))


def load_labels(path: str | Path, strict: bool = True) -> tuple[list[Label], Counter]:
    """Labels from JSONL. ``strict``: a bad line raises naming the file and line; otherwise it is skipped
    and counted (the Counter maps a reason to how many lines it hit)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"label file {str(path)!r} does not exist")
    labels, skipped = [], Counter()
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: not valid JSON ({e.msg})") from None
            labels.append(parse_label(record, where))
        except ValueError as e:
            if strict:
                raise
            skipped[str(e).split(": ", 1)[1].split(" (")[0].split(";")[0]] += 1
    return labels, skipped


def append_label(path: str | Path, label: Label) -> None:
    """Add one label to a JSONL file (created if missing): one line, flushed, so a crash loses nothing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"prompt": label.prompt, "completion": label.completion}
    if label.good is not None:
        record["label"] = "good" if label.good else "bad"
    if label.steps is not None:
        record["steps"] = list(label.steps)
    if label.annotator:
        record["annotator"] = label.annotator
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()


def latest(labels: list[Label]) -> dict[tuple[str, str], Label]:
    """One label per (prompt, completion): the last one written wins (a relabel corrects)."""
    return {(l.prompt, l.completion): l for l in labels}


def labels_to_pairs(labels: list[Label]) -> list[PreferencePair]:
    """Each good completion of a prompt preferred to each bad one of the same prompt."""
    by_prompt: dict[str, dict[str, list[str]]] = {}
    for l in latest(labels).values():
        if l.good is not None:
            by_prompt.setdefault(l.prompt, {"good": [], "bad": []})["good" if l.good else "bad"].append(l.completion)
    return [PreferencePair(p, g, b) for p, d in by_prompt.items() for g in d["good"] for b in d["bad"]]


@dataclass
class LabelReward:
    """A ``protocols.TextReward`` from labels: 1 for good, 0 for bad, None (not applicable) for a
    completion nobody labelled. With ``stepwise=True`` it returns the step labels instead (a list per
    completion, one value per step), for completions that have them."""

    labels: list
    stepwise: bool = False
    name: str = "human"
    table: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.table = latest(self.labels)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "LabelReward":
        return cls(load_labels(path)[0], **kwargs)

    def __call__(self, prompt: str, completion: str):
        label = self.table.get((prompt, completion))
        if label is None:
            return None
        if self.stepwise:
            return None if label.steps is None else list(label.steps)
        return None if label.good is None else float(label.good)
