"""The README's fenced blocks, read with their line numbers, and what each shell block promises.

A block fenced as ```` ```bash ```` (or ``sh``, ``shell``, ``console``) is an example a reader
runs as printed. ```` ```bash server ```` starts a server that stays up while the blocks after
it run. ```` ```text synopsis ```` lists a command's forms with placeholders (``VERSION``,
``[--at TIME]``); each form must have a concrete example in a shell block or in a named test.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SHELL = frozenset({"bash", "sh", "shell", "console"})
FENCE = re.compile(r"^```(?P<info>.*)$")
# what a reader cannot run as printed: <version>, an ellipsis, "...", or a bare VERSION word
PLACEHOLDER = re.compile(r"<[a-z][a-z -]*>|…|\.\.\.|\b(?:VERSION|SRC|DEST)\b")


@dataclass(frozen=True)
class Block:
    """One fenced block of the README.

    Attributes:
        line: The line number of its opening fence (1-based).
        lang: The first word of the fence's info string (``bash``, ``text``, or empty).
        tags: The further words (``server``, ``synopsis``).
        text: The lines between the fences.
    """

    line: int
    lang: str
    tags: tuple[str, ...]
    text: str

    @property
    def runnable(self) -> bool:
        """A shell example: run as printed."""
        return self.lang in SHELL

    def commands(self) -> list[str]:
        """Its command lines, continuation lines joined, comments and blank lines left out."""
        joined = self.text.replace("\\\n", " ")
        return [
            line.strip()
            for line in joined.splitlines()
            if line.strip() and not line.strip().startswith("#")
        ]


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of the Markdown file at ``path``, in order."""
    blocks: list[Block] = []
    opened: tuple[int, str] | None = None
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if match is None:
            if opened is not None:
                body.append(line)
            continue
        if opened is None:
            opened, body = (number, match["info"].strip()), []
            continue
        words = opened[1].split()
        blocks.append(
            Block(opened[0], words[0] if words else "", tuple(words[1:]), "\n".join(body) + "\n")
        )
        opened = None
    if opened is not None:
        raise ValueError(f"{path}:{opened[0]}: a fenced block is never closed")
    return blocks


def synopsis_forms(block: Block) -> list[str]:
    """The command forms a synopsis (or a ``$ `` prompt line of an output sample) shows."""
    forms = []
    for line in block.text.splitlines():
        text = line.strip().removeprefix("$ ")
        if not text.startswith("recflow "):
            continue
        for part in text.split(" ; "):
            forms.append(part.split("#", 1)[0].strip())
    return forms


def form_key(form: str) -> tuple[str, ...]:
    """What an example must hold to cover ``form``: its command words and required options.

    ``recflow deploy --rollback --reason R [VERSION]`` needs ``recflow deploy``, ``--rollback``
    and ``--reason``; bracketed parts are optional and placeholders are any value.
    """
    required = re.sub(r"\[[^\]]*\]", " ", form).split()
    words = []
    for word in required:
        if not re.fullmatch(r"[a-z][a-z_]*", word):
            break
        words.append(word)
    options = [word for word in required if word.startswith("--")]
    return (" ".join(words), *options)


def covers(command: str, key: tuple[str, ...]) -> bool:
    """True when the shell command line ``command`` is an example of the form ``key``."""
    try:
        tokens = shlex.split(command, comments=True)
    except ValueError:
        tokens = command.split()
    text = " ".join(tokens)
    return f"{key[0]} " in f"{text} " and all(option in tokens for option in key[1:])
