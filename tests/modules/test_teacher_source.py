"""Where a phase's teacher outputs come from: the live teacher or the logits cache."""
import logging
from types import SimpleNamespace

from src.config import load_config
from src.trainer import _teacher_source


def _models(matches):
    return SimpleNamespace(tasks=[], teachers=["teacher"], matches=matches, teacher_source="live teacher")


def test_a_cache_asked_for_beside_intermediate_matches_says_it_is_not_used(caplog):
    """td1 (or a td2 with matches) needs hidden states and attention maps, which the cache does not
    hold: the live teacher runs, and the log says why the cache went unused."""
    cfg = load_config(["--distill.teacher_cache=true"])
    with caplog.at_level(logging.WARNING):
        assert _teacher_source(cfg, _models(matches=("a match",)), None, logging.getLogger("t")) == "live teacher"
    assert "distill.teacher_cache is not used in this phase: its intermediate matches need" in caplog.text
    caplog.clear()
    assert _teacher_source(load_config([]), _models(("a match",)), None, logging.getLogger("t")) == "live teacher"
    assert caplog.text == ""
