"""Text handed out token by token: stop strings, and text held back while it may still change."""

from minilazy.serve.text import TextStream

PIECES = {1: "he", 2: "llo", 3: " wo", 4: "rld", 5: "\ufffd"}


def decode(tokens):
    return "".join(PIECES[t] for t in tokens)


def test_deltas_add_up_to_the_text():
    stream = TextStream(decode)
    deltas = [stream.push(t)[0] for t in (1, 2, 3, 4)]
    assert deltas == ["he", "llo", " wo", "rld"] and stream.flush() == ""


def test_a_stop_string_cuts_the_text_and_ends_it():
    stream = TextStream(decode, ("o w",))
    assert stream.push(1) == ("he", False)
    assert stream.push(2) == ("ll", False)  # "o" may start "o w": held back
    assert stream.push(3) == ("", True)
    assert stream.text == "hell" and stream.flush() == ""


def test_held_back_text_comes_out_when_it_is_not_a_stop_string_or_at_the_end():
    stream = TextStream(decode, ("lo!",))
    assert stream.push(1) == ("he", False)
    assert stream.push(2) == ("l", False)
    assert stream.push(3) == ("lo wo", False)
    stream = TextStream(decode, ("lo!",))
    stream.push(1), stream.push(2)
    assert stream.flush() == "lo"


def test_an_unfinished_character_waits():
    stream = TextStream(decode)
    assert stream.push(1) == ("he", False)
    assert stream.push(5) == ("", False)
