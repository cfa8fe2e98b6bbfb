from services.text_generation.stops import StopSequenceFilter


def run(stops: list[str], pieces: list[str]) -> tuple[str, bool]:
    stop_filter = StopSequenceFilter(stops)
    out = "".join(stop_filter.feed(piece) for piece in pieces)
    stopped = stop_filter.stopped
    return out + stop_filter.flush(), stopped


def test_stop_sequence_split_across_tokens_is_found_and_cut() -> None:
    assert run(["\n\n"], ["Hello", " world\n", "\nmore"]) == ("Hello world", True)


def test_earliest_of_several_stops_wins() -> None:
    assert run(["END", "."], ["one. two ", "END"]) == ("one", True)


def test_text_that_only_looks_like_a_stop_prefix_is_released() -> None:
    stop_filter = StopSequenceFilter(["STOP"])
    assert stop_filter.feed("go ST") == "go "  # "ST" might begin "STOP": held back
    assert stop_filter.feed("ART") == "START"
    assert not stop_filter.stopped


def test_held_back_text_is_flushed_at_the_end() -> None:
    assert run(["STOP"], ["almost ST"]) == ("almost ST", False)


def test_no_stops_passes_everything() -> None:
    assert run([], ["a", "b"]) == ("ab", False)


def test_nothing_is_emitted_after_a_stop() -> None:
    stop_filter = StopSequenceFilter(["x"])
    assert stop_filter.feed("ax") == "a"
    assert stop_filter.feed("more") == ""
