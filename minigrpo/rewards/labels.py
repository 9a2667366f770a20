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

The file is read a line at a time within the size limits of ``lm/lines.py`` (1 MiB a line, 64 Ki
characters a text); a line over them, or not UTF-8, is one bad line (an error, or with
``strict=False`` a counted skip), never a whole-file refusal.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from minigrpo.lm.lines import check_text, jsonl_records
from minigrpo.rewards.preferences import PreferencePair


class Labels(list):
    """The labels of a file (a list of ``Label``) that remembers where it came from — ``source``, the
    file, and ``skipped``, the lines skipped by reason — so ``labels_to_pairs`` can say truly why a
    file gives no pair."""

    def __init__(self, labels=(), source: str | None = None, skipped: Counter | None = None):
        super().__init__(labels)
        self.source, self.skipped = source, skipped if skipped is not None else Counter()

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
    check_text(record["prompt"], where, "prompt")
    check_text(record["completion"], where, "completion")
    good = _parse_good(record["label"], where) if "label" in record else None
    steps = record.get("steps")
    if steps is not None:
        if not isinstance(steps, list) or not all(s is None or (isinstance(s, (int, float)) and not isinstance(s, bool)
                                                                 and s == s and abs(s) != float("inf")) for s in steps):
            raise ValueError(f"{where}: steps={steps!r} must be a list of numbers (1 right, 0 wrong) or null")
        steps = tuple(None if s is None else float(s) for s in steps)
    return Label(record["prompt"], record["completion"], good, steps, record.get("annotator"))


def load_labels(path: str | Path, strict: bool = True) -> tuple[Labels, Counter]:
    """Labels from JSONL, a line at a time within the limits of ``lm/lines.py``. ``strict``: a bad line
    raises naming the file and line; otherwise it is skipped and counted (the Counter maps a reason to
    how many lines it hit). The labels come as ``Labels``, which remember the file for ``labels_to_pairs``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"label file {str(path)!r} does not exist")
    if path.is_dir():
        raise IsADirectoryError(f"label file {str(path)!r} is a folder; give a JSONL file of labels")
    labels, skipped = Labels(source=str(path)), Counter()
    for where, record in jsonl_records(path):
        try:
            if isinstance(record, ValueError):
                raise record
            labels.append(parse_label(record, where))
        except ValueError as e:
            if strict:
                raise
            skipped[_reason(str(e))] += 1
    labels.skipped = skipped
    return labels, skipped


def _reason(message: str) -> str:
    """The kind of problem in a line's error, without its location or contents."""
    text = message.split(": ", 1)[-1]
    for key in ("over the limit", "not UTF-8", "not valid JSON"):
        if key in text:
            return key
    return text.split(" (")[0].split(";")[0]


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


def labels_to_pairs(labels: list[Label], source: str | None = None) -> list[PreferencePair]:
    """Each good completion of a prompt preferred to each bad one of the same prompt.

    For labels read from a file (``load_labels``, or ``source`` given) that give no pair, a ValueError
    says truly why: the file is empty, every line was skipped, or no prompt has both a 👍 and a 👎."""
    by_prompt: dict[str, dict[str, list[str]]] = {}
    for l in latest(labels).values():
        if l.good is not None:
            by_prompt.setdefault(l.prompt, {"good": [], "bad": []})["good" if l.good else "bad"].append(l.completion)
    pairs = [PreferencePair(p, g, b) for p, d in by_prompt.items() for g in d["good"] for b in d["bad"]]
    source = source or getattr(labels, "source", None)
    if not pairs and source is not None:
        raise ValueError(no_pair_message(labels, source))
    return pairs


def no_pair_message(labels: list[Label], source: str) -> str:
    """Why the labels of ``source`` give no preference pair, in one line."""
    name = Path(source).name
    skipped = getattr(labels, "skipped", None) or {}
    why = ", ".join(f"{n} {r}" for r, n in skipped.items())
    if not labels:
        if skipped:
            return f"{name}: every labelled line was skipped ({why}); no label is left, so no pair can be made"
        return f"{name} is empty; label some completions 👍 and some 👎 of the same prompts"
    kept = latest(labels).values()
    good = sum(l.good is True for l in kept)
    bad = sum(l.good is False for l in kept)
    said = f"{name}: {len(labels)} label{'s' * (len(labels) != 1)}"
    if good == bad == 0:
        return f"{said}, all step labels (no good/bad): no pair can be made; give some a 'label' of 👍 or 👎"
    if bad == 0:
        return f"{said}, all 👍: no pair can be made; label some completions 👎"
    if good == 0:
        return f"{said}, all 👎: no pair can be made; label some completions 👍"
    return (f"{said} ({good} 👍, {bad} 👎), but no prompt has both a 👍 and a 👎 completion: no pair can be made; "
            "label good and bad completions of the same prompts")


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
