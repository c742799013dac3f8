"""Ways of starting an instance, picked by name from one table."""

from __future__ import annotations

import logging

from thawllm.gateway.source import Source
from thawllm.gateway.starters.base import Starter, StarterOptions, StarterUnavailable, StartError
from thawllm.gateway.starters.cold import ColdStarter
from thawllm.gateway.starters.criu import CriuStarter

logger = logging.getLogger("thaw.gateway")

STARTERS: dict[str, type[Starter]] = {
    "criu": CriuStarter,
    "cold": ColdStarter,
}
# The order in which --starter auto tries them: the fastest first.
AUTO_ORDER = ("criu", "cold")

__all__ = ["STARTERS", "Starter", "StarterOptions", "StarterUnavailable", "StartError", "create_starter"]


def create_starter(requested: str, source: Source, options: StarterOptions) -> Starter:
    """Return the starter named REQUESTED, or for "auto" the first of AUTO_ORDER that works here.

    Raises StarterUnavailable when a starter named explicitly cannot work.
    """
    if requested != "auto":
        starter = _create_named(requested, source, options)
        logger.info("Starter: %s (--starter %s): %s.", starter.name, requested, starter.describe())
        return starter

    reasons = []
    for name in AUTO_ORDER:
        try:
            starter = STARTERS[name].create(source, options)
        except StarterUnavailable as exc:
            reasons.append(f"{name} is unavailable: {exc}")
            continue
        explanation = f" because {'; '.join(reasons)}" if reasons else ", the fastest that works here"
        logger.info("Starter: %s (--starter auto)%s. Instances come from %s.", name, explanation,
                    starter.describe())
        return starter
    raise StarterUnavailable("; ".join(reasons))


def _create_named(name: str, source: Source, options: StarterOptions) -> Starter:
    if name not in STARTERS:
        raise StarterUnavailable(f"Unknown starter {name!r}: pass one of auto, {', '.join(STARTERS)}.")
    try:
        return STARTERS[name].create(source, options)
    except StarterUnavailable as exc:
        others = ", ".join(other for other in STARTERS if other != name)
        raise StarterUnavailable(
            f"--starter {name} cannot work here: {exc} Pass --starter auto or --starter {others}."
        ) from exc
