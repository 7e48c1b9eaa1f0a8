"""Learning rules, one file each, selected by name (science.md §1)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from engine.rules.base import Rule
from engine.rules.bp import BP
from engine.rules.brsf import BRSF
from engine.rules.dfa import DFA
from engine.rules.fa import FA
from engine.rules.frsf import FRSF
from engine.rules.ldfa import LDFA
from engine.rules.usf import USF

if TYPE_CHECKING:
    from fa_contract.config import RuleCfg

RULES: dict[str, type[Rule]] = {r.name: r for r in (BP, FA, USF, BRSF, FRSF, DFA, LDFA)}


def build_rule(cfg: "RuleCfg", seed: int) -> Rule:
    """The rule named by `cfg.name`, with its own feedback RNG seeded by `seed`."""
    return RULES[cfg.name](cfg, seed)
