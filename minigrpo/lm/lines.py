"""Bounded reading of JSONL files: preference, label and prompt-data files, one record a line.

A file of records is read one line at a time, and never more than ``MAX_LINE_BYTES`` of a line is
held: a longer line is read past in chunks and reported, so one 20 MB line (a pasted log, a binary
file renamed ``.jsonl``) costs a bounded amount of memory and time instead of being parsed and
tokenized in full. The limits:

``MAX_LINE_BYTES``  1 MiB a line. A record is a prompt and one or a few completions; at the text
                    limit below three texts of plain text fit with room to spare. A longer line is
                    almost surely not a record someone meant to write.
``MAX_TEXT_CHARS``  64 Ki characters a text (a prompt, a completion). Every model here reads at most
                    a few thousand tokens (the shipped ones 48), and the reward model keeps only the
                    last ``context`` tokens of prompt + completion; 64 Ki characters is many times
                    any context, so no text a model could read in full is refused, and tokenizing
                    one stays a matter of milliseconds.
``MAX_RANKING``     100 completions a ranking: a ranking of n gives n·(n−1)/2 pairs (4950 at 100), so
                    a 1 MiB line of short strings cannot turn into billions of pairs.

Every problem is a ``ValueError`` naming the file, the line, the value's size and the limit; the
readers (``preferences.load_preferences``, ``labels.load_labels``) either raise it or, with
``--skip-bad`` (``strict=False``), count it and go on. A line that is not UTF-8 is one bad line,
not a bad file.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

MAX_LINE_BYTES = 1 << 20          # 1 MiB a line
MAX_TEXT_CHARS = 64 * 1024        # 64 Ki characters a text
MAX_RANKING = 100                 # completions a ranking
_CHUNK = 1 << 16


def _size(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} bytes"


def raw_lines(path: str | Path, limit: int = MAX_LINE_BYTES) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number, the line's bytes without its newline — or None when it is over ``limit`` —, its
    length in bytes) for each line of ``path``. At most ``limit`` + 64 KiB bytes are held at once."""
    with open(path, "rb") as f:
        n = 0
        while True:
            line = f.readline(limit + 1)
            if not line:
                return
            n += 1
            if len(line) > limit and not (len(line) == limit + 1 and line.endswith(b"\n")):
                size = len(line)
                while not line.endswith(b"\n"):          # read past the rest of the line, a chunk at a time
                    line = f.readline(_CHUNK)
                    if not line:
                        break
                    size += len(line)
                yield n, None, size - line.endswith(b"\n")
                continue
            body = line.rstrip(b"\r\n")
            yield n, body, len(body)


def jsonl_records(path: str | Path, limit: int = MAX_LINE_BYTES) -> Iterator[tuple[str, object]]:
    """(where, record) for each non-blank line of a JSONL file — ``where`` is ``path:line`` — with the
    record replaced by a ``ValueError`` (to raise, or to count) when the line is over ``limit`` bytes,
    not UTF-8 or not valid JSON."""
    for n, body, size in raw_lines(path, limit):
        where = f"{path}:{n}"
        if body is None:
            yield where, ValueError(f"{where}: the line is {_size(size)}, over the limit of {_size(limit)} a line "
                                    f"(MAX_LINE_BYTES in minigrpo/lm/lines.py); a record is a prompt and its "
                                    "completions: split or shorten it")
            continue
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as e:
            yield where, ValueError(f"{where}: not UTF-8 text (byte 0x{body[e.start]:02x} at column {e.start + 1}); "
                                    "save the file as UTF-8")
            continue
        if not text.strip():
            continue
        try:
            yield where, json.loads(text)
        except json.JSONDecodeError as e:
            yield where, ValueError(f"{where}: not valid JSON ({e.msg})")
        except RecursionError:
            yield where, ValueError(f"{where}: not valid JSON (nested too deeply)")


def check_text(value: str, where: str, name: str, limit: int = MAX_TEXT_CHARS) -> str:
    """``value`` if it is at most ``limit`` characters; else a ValueError naming ``where`` and field ``name``."""
    if len(value) > limit:
        raise ValueError(f"{where}: {name} is {len(value)} characters, over the limit of {limit} a text "
                         "(MAX_TEXT_CHARS in minigrpo/lm/lines.py); shorten it")
    return value


def first_long_line(path: str | Path, limit: int = MAX_LINE_BYTES) -> tuple[int, int] | None:
    """(line number, bytes) of the first line of ``path`` over ``limit`` bytes, or None."""
    for n, body, size in raw_lines(path, limit):
        if body is None:
            return n, size
    return None


def long_line_message(path: str | Path, n: int, size: int, limit: int = MAX_LINE_BYTES) -> str:
    return (f"{path}:{n}: the line is {_size(size)}, over the limit of {_size(limit)} a line (MAX_LINE_BYTES in "
            "minigrpo/lm/lines.py); a row is a prompt and its columns: split or shorten it")


def first_non_utf8(path: str | Path) -> tuple[int, int, int] | None:
    """(line, column in bytes, the byte) of the first byte of ``path`` that is not UTF-8, or None. Reads the file
    in chunks with an incremental decoder: a file of any size, in bounded memory."""
    import codecs

    decoder, offset = codecs.getincrementaldecoder("utf-8")(), 0
    with open(path, "rb") as f:
        while True:
            chunk, held = f.read(_CHUNK), len(decoder.getstate()[0])    # bytes held back from the last chunk
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as e:
                at = offset - held + e.start
                f.seek(0)
                head = f.read(at + 1)
                return head.count(b"\n") + 1, at - (head.rfind(b"\n", 0, at) + 1), head[at]
            if not chunk:
                return None
            offset += len(chunk)
