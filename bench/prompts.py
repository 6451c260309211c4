"""Prompts of real English text with chosen token lengths, available offline on any machine.

The text comes from the docstrings of the Python standard library, which
every installation carries: real prose and code, not one repeated token.
"""

from __future__ import annotations

import importlib
import inspect
import random
import warnings

MODULES = (
    "argparse", "asyncio", "collections", "csv", "dataclasses", "datetime", "decimal", "email", "fractions",
    "functools", "heapq", "http.server", "inspect", "itertools", "json", "logging", "pathlib", "pickle",
    "random", "re", "shutil", "socket", "sqlite3", "statistics", "string", "subprocess", "tarfile", "textwrap",
    "threading", "typing", "unittest", "urllib.parse", "uuid", "zipfile",
)  # fmt: skip


def corpus() -> str:
    """Module, class and function docstrings of the standard library, concatenated."""
    parts: list[str] = []
    with warnings.catch_warnings():  # walking `typing` touches its deprecated aliases
        warnings.simplefilter("ignore", DeprecationWarning)
        for name in MODULES:
            module = importlib.import_module(name)
            parts.append(inspect.getdoc(module) or "")
            for _, member in inspect.getmembers(module):
                if inspect.isclass(member) or inspect.isfunction(member):
                    parts.append(inspect.getdoc(member) or "")
    return "\n\n".join(part for part in parts if len(part) > 200)


def prompt_token_ids(tokenizer, lengths: list[int], seed: int = 0) -> list[list[int]]:
    """One prompt per length: a random window of the corpus, cut to exactly that many tokens."""
    ids = tokenizer(corpus(), add_special_tokens=False)["input_ids"]
    rng = random.Random(seed)
    prompts = []
    for length in lengths:
        if length > len(ids):
            raise ValueError(f"a prompt of {length} tokens is longer than the corpus ({len(ids)} tokens)")
        start = rng.randrange(0, len(ids) - length + 1)
        prompts.append(ids[start : start + length])
    return prompts
