# mypy: disable-error-code="empty-body"
# A coding-agent spec: the stubs below (a docstring and '...') are the functions to write, the
# test_* functions decide whether they are right. Build it with
#
#     python -m examples.coding_agent examples/coding_agent/specs/textstats.py --out out/textstats
"""textstats: small statistics of plain English text.

A word is a maximal run of ASCII letters, possibly with inner apostrophes ("don't"), compared in
lower case. A sentence ends at a run of '.', '!' or '?' (or at the end of the text).
"""


def words(text: str) -> list[str]:
    """The words of ``text`` in order, lower-cased.

    >>> words("Don't panic -- it's 42 o'clock!")
    ["don't", 'panic', "it's", "o'clock"]
    """
    ...


def sentences(text: str) -> list[str]:
    """The sentences of ``text``: split after each run of '.', '!' or '?' (the marks stay with
    their sentence), each stripped of surrounding whitespace; empty pieces are dropped.

    >>> sentences("Hi. How are you?  Fine!")
    ['Hi.', 'How are you?', 'Fine!']
    """
    ...


def top_words(text: str, n: int) -> list[tuple[str, int]]:
    """The ``n`` most frequent words of ``text`` as (word, count) pairs, most frequent first,
    ties in alphabetical order. Uses words() to split the text.

    >>> top_words("b a b c a b", 2)
    [('b', 3), ('a', 2)]
    """
    ...


def summary(text: str) -> str:
    """One line: "<S> sentences, <W> words; top: <w1> (<c1>), <w2> (<c2>), <w3> (<c3>)", counting
    with sentences() and words(), the top list from top_words(text, 3) (fewer when there are fewer
    distinct words; "top: none" when there are none).

    >>> summary("The cat sat. The cat ran!")
    '2 sentences, 6 words; top: cat (2), the (2), ran (1)'
    """
    ...


SAMPLE = "It was the best of times, it was the worst of times. Was it? It was!"


def test_words() -> None:
    assert words("Hello, World") == ["hello", "world"]
    assert words("Don't panic -- it's 42 o'clock!") == ["don't", "panic", "it's", "o'clock"]
    assert words("  ") == []
    assert words("a1b2") == ["a", "b"]


def test_sentences() -> None:
    assert sentences("Hi. How are you?  Fine!") == ["Hi.", "How are you?", "Fine!"]
    assert sentences("no end mark") == ["no end mark"]
    assert sentences("Wait... what?") == ["Wait...", "what?"]
    assert sentences("") == []


def test_top_words() -> None:
    assert top_words("b a b c a b", 2) == [("b", 3), ("a", 2)]
    assert top_words("b a b c a b", 10) == [("b", 3), ("a", 2), ("c", 1)]
    assert top_words("b a c", 3) == [("a", 1), ("b", 1), ("c", 1)]
    assert top_words(SAMPLE, 3) == [("it", 4), ("was", 4), ("of", 2)]
    assert top_words("", 3) == []


def test_summary() -> None:
    assert summary("The cat sat. The cat ran!") == "2 sentences, 6 words; top: cat (2), the (2), ran (1)"
    assert summary(SAMPLE) == "3 sentences, 16 words; top: it (4), was (4), of (2)"
    assert summary("") == "0 sentences, 0 words; top: none"
    assert summary("Go go.") == "1 sentences, 2 words; top: go (2)"


def test_words_of_sentences_add_up() -> None:
    # Runs only on the assembled module: it calls two functions neither of which calls the other.
    assert sum(len(words(s)) for s in sentences(SAMPLE)) == len(words(SAMPLE))
