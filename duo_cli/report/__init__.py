"""The report of a cost sweep: statistics (:mod:`.stats`, :mod:`.summary`,
:mod:`.across`, :mod:`.yrc`, put together by :mod:`.builder`), console tables
(:mod:`.tables`), plots (:mod:`.plots`) and ``report.md`` (:mod:`.markdown`), computed
from the jobs' results (:mod:`.records`).

The modules import each other directly (``duo_cli.report.<module>``) and only
downward; none imports this ``__init__``.
"""

from duo_cli.report.builder import DEFINITIONS, build

__all__ = ["DEFINITIONS", "build"]
