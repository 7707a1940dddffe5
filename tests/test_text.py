"""What the model reads: numbers, amounts, times and symbols written out as words."""

import random

import pytest

from speech_service.text.layout import flatten_layout
from speech_service.text.segments import split_text
from speech_service.text.spoken import normalize_for_speech

SPOKEN = [
    # cardinals, negatives, decimals
    ("I have 3 apples.", "I have three apples."),
    ("1,000,000 people", "one million people"),
    ("1234567", "one million two hundred thirty-four thousand five hundred sixty-seven"),
    ("It was -5 degrees (-12 at night).", "It was minus five degrees (minus twelve at night)."),
    ("pi is 3.14.", "pi is three point one four."),
    ("-3.5 and 0.05", "minus three point five and zero point zero five"),
    ("version 1.5.3", "version one point five point three"),
    ("agent 007", "agent zero zero seven"),
    # ordinals
    ("the 1st, 22nd, 3rd and 101st", "the first, twenty-second, third and one hundred first"),
    ("11th and 1,000th", "eleventh and one thousandth"),
    # years: after a year word, in ranges, as decades; a bare number stays a cardinal
    ("in 1984", "in nineteen eighty-four"),
    ("Since 2005 and by 2010.", "Since two thousand five and by twenty ten."),
    ("in 1905", "in nineteen oh-five"),
    ("from 1990 to 2000", "from nineteen ninety to two thousand"),
    ("between 1939 and 1945", "between nineteen thirty-nine and nineteen forty-five"),
    ("1990-2000", "nineteen ninety to two thousand"),
    ("the 1990s", "the nineteen nineties"),
    ("the '80s, in her 50s", "the eighties, in her fifties"),
    ("2005", "two thousand five"),
    ("1984 people", "one thousand nine hundred eighty-four people"),
    ("44 BC", "forty-four BC"),
    ("July 4, 1776", "July fourth, seventeen seventy-six"),
    ("on May 3rd", "on May third"),
    ("5 May 2024", "the fifth of May twenty twenty-four"),
    ("on the 5th of May", "on the fifth of May"),
    ("Jan. 5, 2024 and Sept 3rd", "January fifth, twenty twenty-four and September third"),
    ("15/03/2024 and 03/15/2024", "March fifteenth twenty twenty-four and March fifteenth twenty twenty-four"),
    ("05/03/2024", "five three twenty twenty-four"),  # May or March: the order is not certain
    ("2024-05-01", "May first twenty twenty-four"),
    ("from 1990-2000, between 1939-1945", "from nineteen ninety to two thousand, between nineteen thirty-nine and "
                                          "nineteen forty-five"),
    ("the 2020-21 season, 1999-00", "the twenty twenty to twenty-one season, nineteen ninety-nine to two thousand"),
    ("Q3 2024 and FY2025", "Q three twenty twenty-four and FY twenty twenty-five"),
    # currency
    ("$5.20", "five dollars and twenty cents"),
    ("$1", "one dollar"),
    ("$0.05", "five cents"),
    ("$5.00", "five dollars"),
    ("$1,250.75", "one thousand two hundred fifty dollars and seventy-five cents"),
    ("€3", "three euros"),
    ("£1.50", "one pound and fifty pence"),
    ("¥100", "one hundred yen"),
    ("$1 million", "one million dollars"),
    ("$2.5 billion", "two point five billion dollars"),
    ("$3M", "three million dollars"),
    ("$5-10", "five to ten dollars"),
    ("-$4.50", "minus four dollars and fifty cents"),
    ("US$5, C$1 and €5,50", "five US dollars, one Canadian dollar and five euros and fifty cents"),
    ("12.50 EUR, 1 USD, a 20 USD bill", "twelve euros and fifty cents, one US dollar, a twenty US dollar bill"),
    ("$5/month, 10 km/day", "five dollars per month, ten kilometers per day"),
    # percentages
    ("50%", "fifty percent"),
    ("3.5% and -2%", "three point five percent and minus two percent"),
    ("5-10%", "five to ten percent"),
    # times
    ("at 10:30", "at ten thirty"),
    ("7:05 pm", "seven oh five PM"),
    ("10:00", "ten o'clock"),
    ("7:00 PM", "seven PM"),
    ("9am", "nine AM"),
    ("23:59", "twenty-three fifty-nine"),
    ("10:30-11:45", "ten thirty to eleven forty-five"),
    ("9-11am", "nine to eleven AM"),
    ("ran 3:45:10, then 1:00:05", "ran three hours forty-five minutes and ten seconds, then one hour and five seconds"),
    ("a 2:1 ratio on 16:9 screens", "a two to one ratio on sixteen to nine screens"),
    ("at 7 p.m. Then we left.", "at seven PM. Then we left."),
    ("at 7 p.m. we left.", "at seven PM we left."),
    # ranges; a dash with spaces may be a subtraction, a chain is a phone number
    ("5-10 pages", "five to ten pages"),
    ("pages 5 – 10", "pages five to ten"),
    ("555-123-4567", "five five five one two three four five six seven"),
    ("+1 (555) 123-4567", "plus one five five five one two three four five six seven"),
    ("555.123.4567", "five five five one two three four five six seven"),
    ("+44 20 7946 0958", "plus four four two zero seven nine four six zero nine five eight"),
    ("Call me at 555-1234.", "Call me at five five five one two three four."),
    ("500-1000 words", "five hundred to one thousand words"),  # no phone word: a range
    ("Call 911 now, or dial 999.", "Call nine one one now, or dial nine nine nine."),
    ("Invite 911 people; call 100 of them.", "Invite nine hundred eleven people; call one hundred of them."),
    ("in 1080p or 720p, not 1080i", "in ten eighty p or seven twenty p, not ten eighty i"),
    # fractions; other slashes join numbers
    ("1/2 cup, 3/4 of it, 2/3", "one half cup, three quarters of it, two thirds"),
    ("24/7, 50/50", "twenty-four seven, fifty fifty"),
    # symbols
    ("R&D, you & me", "R and D, you and me"),
    ("2+2=4", "two plus two equals four"),
    ("18+ only", "eighteen plus only"),
    ("#1 hit, ~5 minutes", "number one hit, about five minutes"),
    ("20°C and 70°F", "twenty degrees Celsius and seventy degrees Fahrenheit"),
    ("MP3 and 5G", "MP three and five G"),
    ("5¢, 1¢", "five cents, one cent"),
    ("2x faster, a 2x4, 3 × 4", "two times faster, a two by four, three times four"),
    ("rated 4.5/5", "rated four point five out of five"),
    ("5'11\" tall, 10^6", "five feet eleven inches tall, ten to the power of six"),
    # abbreviations: titles before a name, streets after one, Latin, "No." before a number
    ("Mr. Smith met Dr. Jones, Mrs. Brown and Ms. Green.",
     "Mister Smith met Doctor Jones, Missus Brown and Miz Green."),
    ("St. James St. and Main St. Then", "Saint James Street and Main Street. Then"),
    ("Martin Luther King, Jr. spoke.", "Martin Luther King, Junior spoke."),
    ("e.g. 5, i.e. 6, US vs. UK, etc. Then", "for example five, that is six, US versus UK, et cetera. Then"),
    ("No. 5 is approx. 3 km", "number five is approximately three kilometers"),
    # units after a number; the singular for exactly one
    ("5kg, 1 km and 2.5 L", "five kilograms, one kilometer and two point five liters"),
    ("60 mph or 100 km/h", "sixty miles per hour or one hundred kilometers per hour"),
    ("5-10 min, 24 h, 250 ms", "five to ten minutes, twenty-four hours, two hundred fifty milliseconds"),
    ("512 GB at 3.5 GHz, 65 W", "five hundred twelve gigabytes at three point five gigahertz, sixty-five watts"),
    ("6 ft tall, -1 V", "six feet tall, minus one volt"),
    ("5 in the box, 5m users", "five in the box, five m users"),
    ("a 5 kg bag, a 512 GB disk, a $20 bill, a $0.99 app",
     "a five kilogram bag, a five hundred twelve gigabyte disk, a twenty dollar bill, a ninety-nine cent app"),
    # Roman numerals: after a word that numbers things, after a monarch's or pope's name
    ("World War II, Chapter IV, Act III", "World War two, Chapter four, Act three"),
    ("Henry VIII's wives and Pope Benedict XVI", "Henry the Eighth's wives and Pope Benedict the Sixteenth"),
    ("Elizabeth II met Henry I.", "Elizabeth the Second met Henry the First."),
    ("In 1984 it cost $5.20, 50% more than the 3rd one at 10:30.",
     ("In nineteen eighty-four it cost five dollars and twenty cents, fifty percent more than the third one "
      "at ten thirty.")),
]

UNCHANGED = [
    "Plain words, nothing to spell.",
    "Three hundred and twelve, the twenty-first of May.",
    "C++ and Disney+ are names; so is A+.",
    "No. I said no. Take Mulholland Dr. west.",  # "No." before no number; "Dr." before no name
    "Then Henry I think left; Rocky II; MIX it.",  # a lone "I" is a pronoun; a film is not a king
    "Wait... what?! (Yes; really: no.)",
    "  spaces   kept  ",
    "日本語 3 つ",  # Japanese (kana): Chinese readings would be wrong, English ones too
    "Привет, 5 минут.",  # another script: the English words would be wrong
    "",
]


@pytest.mark.parametrize("text, spoken", SPOKEN)
def test_numbers_and_symbols_are_spoken_as_words(text, spoken):
    assert normalize_for_speech(text) == spoken


@pytest.mark.parametrize("text", UNCHANGED)
def test_text_without_numbers_or_in_another_script_is_unchanged(text):
    assert normalize_for_speech(text) == text


@pytest.mark.parametrize("text", [t for t, _ in SPOKEN])
def test_no_digit_reaches_the_model_and_spelling_again_changes_nothing(text):
    spoken = normalize_for_speech(text)
    assert not any(c.isdigit() for c in spoken)
    assert normalize_for_speech(spoken) == spoken


def test_numbers_keep_the_sentences_the_splitter_finds():
    """"5.20" and "10:30" were never split points; their words must not become any, and the
    sentence ends stay where they were."""
    spoken = normalize_for_speech("It costs $5.20. Then 10:30.")
    assert split_text(spoken, 40) == ["It costs five dollars and twenty cents.", "Then ten thirty."]
    long = normalize_for_speech("We met at 7:05 pm on July 4, 1776 and paid $1,250,000.75 for 1,234,567 tickets.")
    assert split_text(long, 1000) == [long]  # one sentence: no comma or full stop came from a number
    assert long.count(",") == 1  # the date's own


@pytest.mark.parametrize("text, segments", [
    ("Mr. Smith went to Washington. He left.", ["Mr. Smith went to Washington.", "He left."]),
    ("J. R. R. Tolkien wrote it. They read it.", ["J. R. R. Tolkien wrote it.", "They read it."]),
    ("Apples, pears, etc. and plums. Then more.", ["Apples, pears, etc. and plums.", "Then more."]),
    ("We live in the U.S. It is big.", ["We live in the U.S.", "It is big."]),
])
def test_a_title_or_initial_does_not_end_a_segment(text, segments):
    """Streaming's first segment ends at the first sentence end: after "Mr." it would be a seam
    inside a name (raw text, as with `normalize_text` off or a name the rules leave)."""
    assert split_text(text, 1000, short_first=True) == segments
    assert split_text(text, 1000) == [text]  # a whole response: one segment, no seam


@pytest.mark.parametrize("text, spoken", [
    ("Chapter 1\n\nIt was a dark night.", "Chapter one. It was a dark night."),
    ("Ingredients:\n\n  Flour\n\nSugar", "Ingredients: Flour. Sugar"),
    ("He said \"go\"\r\n\r\nThen he went.", "He said \"go\". Then he went."),
    ("A line wrapped\nby an editor goes on.", "A line wrapped by an editor goes on."),
    ("It ended!\n\nNext part.", "It ended! Next part."),
    ("Buy:\n- Eggs\n* Milk,\n  fresh\n\nThat is all.", "Buy: Eggs. Milk, fresh. That is all."),
    ("Steps\n1. Mix\n2) Bake at 180", "Steps. one, Mix. two, Bake at one hundred eighty"),
    ("-5 degrees and 2. place", "minus five degrees and two. place"),  # no line starts a list here
])
def test_layout_becomes_punctuation(text, spoken):
    """A heading or list item has no full stop of its own; read into the next line, it would lose its
    pause. A single line break is often only where an editor wrapped the text. The layout is read
    before the numbers are spelled out ("2." at a line's start is a list number, not a sentence end)."""
    assert normalize_for_speech(flatten_layout(text)) == spoken


def test_a_heading_is_a_segment_of_its_own():
    text = flatten_layout("Chapter One\n\nIt was a dark night. The end.")
    assert split_text(text, 1000, short_first=True) == ["Chapter One.", "It was a dark night.", "The end."]


def test_any_mix_of_numbers_symbols_and_abbreviations_is_spoken_without_a_digit_left():
    """Random (seeded) strings of the pieces the rules look for: none raises (a 500 for the request),
    none leaves a digit for the model to mumble, and the result still splits."""
    pieces = [*"0123456789" * 3, *"$€£¥¢&+=#~°@%×^/:-–.,'’\"() x", "Mr. ", "Dr. ", "St. ", ", Jr. ", "e.g. ",
              "etc. ", "No. ", "Jan. ", "May ", "in ", "between ", "a ", "Henry ", "Chapter ", "II ", "kg", "GB",
              "USD", "US$", "Q3 ", "FY", "call ", "pm", "p.m.", "month", "1999", "2020", "12:30", "3:45:10",
              "Smith ", "James "]
    rng = random.Random(7)
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 10)))
        spoken = normalize_for_speech(text)
        assert not any(c.isdigit() for c in spoken), (text, spoken)
        assert split_text(spoken, 30) or not spoken.strip()
