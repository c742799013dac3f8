from thawllm.engine.stops import StopMatcher


def feed_all(matcher: StopMatcher, pieces: list[str]) -> str:
    return "".join(matcher.feed(piece) for piece in pieces)


def test_text_without_stops_passes_through():
    matcher = StopMatcher([])
    assert feed_all(matcher, ["Hello", " world"]) == "Hello world"
    assert not matcher.stopped


def test_stop_split_across_pieces_is_cut():
    matcher = StopMatcher(["END"])
    assert feed_all(matcher, ["one E", "N", "D two"]) == "one "
    assert matcher.stopped


def test_partial_stop_is_held_then_released():
    matcher = StopMatcher(["\n\n"])
    assert matcher.feed("line\n") == "line"
    assert matcher.feed("next") == "\nnext"
    assert matcher.flush() == ""


def test_earliest_of_several_stops_wins():
    matcher = StopMatcher(["b", "abc"])
    assert matcher.feed("xxabc") == "xx"
    assert matcher.stopped


def test_flush_returns_held_text():
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("ST") == ""
    assert matcher.flush() == "ST"
