"""The question corpus (``corpus.yaml``): loading it and comparing a parse with an entry.

Shared by ``tests/questions/test_parser.py`` (asserts the accuracy) and ``bench/questions.py`` (prints it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import yaml

from backend.questions.interpretation import UNIDADE_PADRAO, Interpretation, Vocabulario

PATH = Path(__file__).with_name("corpus.yaml")
HELD_OUT_MARK = "# --- written after the parser was tuned"
SLOTS = ("site", "grupo", "device", "usuario", "periodo", "granularidade", "fonte", "subsistema", "unidade", "ciclo",
         "termo")


@dataclass(frozen=True)
class Corpus:
    agora: dt.datetime
    vocabulario: Vocabulario
    entries: list[dict[str, Any]]
    held_out: list[dict[str, Any]]
    """The entries written after the parser's rules were last changed (a subset of ``entries``)."""


def load(path: Path = PATH) -> Corpus:
    text = path.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    entries = data["perguntas"]
    held: list[dict[str, Any]] = []
    mark = f"\n  {HELD_OUT_MARK}"
    if mark in text:  # the entries after the mark: count those before it
        before = yaml.safe_load(text.split(mark, 1)[0])["perguntas"]
        held = entries[len(before):]
    return Corpus(agora=dt.datetime.fromisoformat(data["agora"]),
                  vocabulario=msgspec.convert(data["vocabulario"], Vocabulario), entries=entries, held_out=held)


def actual(i: Interpretation) -> dict[str, Any]:
    p = i.periodo
    return {"intencao": i.intencao, "site": i.escopo.site, "grupo": i.escopo.grupo, "device": i.escopo.device,
            "usuario": i.escopo.usuario, "periodo": [p.inicio, p.fim] if p else None,
            "granularidade": i.granularidade, "fonte": i.fonte, "subsistema": i.subsistema, "unidade": i.unidade,
            "ciclo": i.ciclo, "termo": i.termo}


def expected(entry: dict[str, Any]) -> dict[str, Any]:
    want: dict[str, Any] = {"intencao": entry["intencao"], "usuario": False}
    want.update({k: None for k in SLOTS if k != "usuario"})
    want["unidade"] = UNIDADE_PADRAO[entry["intencao"]]
    want.update({k: v for k, v in entry.items() if k in SLOTS})
    return want


def mismatches(entry: dict[str, Any], interpretation: Interpretation) -> dict[str, tuple[Any, Any]]:
    """``{slot: (expected, got)}`` for every slot that differs; empty when the parse is right."""
    want, got = expected(entry), actual(interpretation)
    return {k: (want[k], got[k]) for k in want if want[k] != got[k]}
