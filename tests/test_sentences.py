"""Tests for the Arabic news sentence splitter (``arabic_events.sentences``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from arabic_events.labels import check_labels
from arabic_events.sentences import Sentence, split_sentences

SEEDS = Path(__file__).resolve().parents[1] / "seeds"


def texts(text: str) -> list[str]:
    """Split ``text``, check every offset, and return the sentence texts."""
    sentences = split_sentences(text)
    previous_end = 0
    for s in sentences:
        assert text[s.start : s.end] == s.text
        assert s.text == s.text.strip()
        assert s.text
        assert previous_end <= s.start < s.end
        previous_end = s.end
    return [s.text for s in sentences]


def seed(index: int) -> str:
    """The text of seed article ``index`` (``000_*.txt`` ... ``004_*.txt``)."""
    (path,) = SEEDS.glob(f"{index:03d}_*.txt")
    return path.read_text(encoding="utf-8")


# --- terminators and line breaks ------------------------------------------------------------


def test_full_stop_question_and_exclamation_marks_end_sentences() -> None:
    text = "قصفت الطائرات المواقع. هل انتهت العملية؟ لا! ما زالت مستمرة? نعم."
    assert texts(text) == [
        "قصفت الطائرات المواقع.",
        "هل انتهت العملية؟",
        "لا!",
        "ما زالت مستمرة?",
        "نعم.",
    ]


def test_runs_of_terminators_stay_together() -> None:
    assert texts("ماذا حدث؟! لا أحد يعرف!!! انتهى.") == [
        "ماذا حدث؟!",
        "لا أحد يعرف!!!",
        "انتهى.",
    ]


def test_line_breaks_end_sentences_and_blank_lines_are_dropped() -> None:
    text = "بغداد تعلن تدمير المخابئ\r\n\r\n21 مارس 2021\nوقال الناطق إن العملية مستمرة"
    assert texts(text) == [
        "بغداد تعلن تدمير المخابئ",
        "21 مارس 2021",
        "وقال الناطق إن العملية مستمرة",
    ]


def test_a_line_break_ends_a_sentence_even_mid_clause() -> None:
    assert texts("لافتاً إلى أن\nعددا من المواقع سلمت.") == ["لافتاً إلى أن", "عددا من المواقع سلمت."]


def test_arabic_comma_and_semicolon_never_end_a_sentence() -> None:
    text = "قصفت الطائرات، ودمرت المواقع؛ ثم عادت إلى قواعدها، سالمة."
    assert texts(text) == [text]


def test_glued_full_stop_between_arabic_words_ends_a_sentence() -> None:
    assert texts("انتهت العملية.وقال الناطق إنها نجحت") == [
        "انتهت العملية.",
        "وقال الناطق إنها نجحت",
    ]


def test_empty_and_punctuation_only_input() -> None:
    assert split_sentences("") == []
    assert split_sentences("  \n\n\t ") == []
    assert texts("***\n...\n«»") == []


def test_surrounding_whitespace_and_invisible_marks_are_stripped() -> None:
    text = "\ufeff  \uf06f متابعة/ المدى  \n\u200f نص الخبر. "
    assert texts(text) == ["متابعة/ المدى", "نص الخبر."]


@pytest.mark.parametrize("space", ["\u00a0", "\u2009", "\u202f", "\u3000", "\t"])
def test_unicode_spaces_separate_and_are_stripped(space: str) -> None:
    text = f"{space}انتهت العملية.{space}وقال الناطق.{space}"
    assert texts(text) == ["انتهت العملية.", "وقال الناطق."]


def test_non_string_input_is_rejected() -> None:
    with pytest.raises(TypeError, match="expects a str"):
        split_sentences(None)  # type: ignore[arg-type]


# --- numbers, dates, times ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "ارتفعت الأسعار بنسبة 3.5 في المئة خلال الشهر.",
        "ارتفعت الأسعار بنسبة ٣٫٥ في المئة خلال الشهر.",
        "ارتفعت الأسعار بنسبة ٣.٥ في المئة خلال الشهر.",
        "بلغت الكلفة 1,200 دولار و1.200.000 دينار.",
        "وقع الهجوم في 14/5/2020 عند الساعة 10:30 صباحا.",
        "وقع الهجوم في 14.05.2020 عند الساعة 10.30 صباحا.",
        "نفذ التحالف 133 ضربة خلال 10 أيام، في جبال قره جوخ.",
    ],
)
def test_numbers_dates_and_times_are_kept_whole(text: str) -> None:
    assert texts(text) == [text]


def test_a_number_or_date_at_the_end_of_a_sentence_still_ends_it() -> None:
    assert texts("بلغ عدد القتلى 12. وقال الناطق إن العدد قد يرتفع.") == [
        "بلغ عدد القتلى 12.",
        "وقال الناطق إن العدد قد يرتفع.",
    ]
    assert texts("وقع الهجوم في 14.05.2020. وأعلن الجيش حالة التأهب.") == [
        "وقع الهجوم في 14.05.2020.",
        "وأعلن الجيش حالة التأهب.",
    ]


# --- abbreviations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "قال د. محمد الحسيني إن الوضع مستقر.",
        "وصرح م. أحمد علي بأن المشروع اكتمل.",
        "وأضاف أ. خالد أن القرار نهائي.",
        "وأوضح ه. الجبوري أن القرار نهائي.",
        "بنيت المدينة في القرن الخامس ق.م وازدهرت طويلا.",
        "بنيت المدينة في القرن الخامس ق.م. وازدهرت طويلا.",
        "نقلت وكالة أ.ف.ب. عن مصدر أمني أن الهجوم فشل.",
        "تصل الرسائل إلى ص.ب. 1234 في بغداد.",
        "وقالت القوات الأمريكية U.S. forces إنها انسحبت.",
        "وقال Dr. Smith إن الضربات دقيقة.",
        "صدر القرار رقم No. 2254 عن مجلس الأمن.",
        "كتب J. R. Allen تقريرا عن العملية.",
        "شملت الأهداف مخابئ وكهوفا etc. and depots في الجبال.",
    ],
)
def test_abbreviations_do_not_end_sentences(text: str) -> None:
    assert texts(text) == [text]


def test_era_marker_after_a_year_ends_the_sentence() -> None:
    assert texts("سقطت بغداد عام 1258 م. وتغير بعدها كل شيء.") == [
        "سقطت بغداد عام 1258 م.",
        "وتغير بعدها كل شيء.",
    ]
    assert texts("تأسست المدينة سنة 145 هـ. ثم توسعت.") == [
        "تأسست المدينة سنة 145 هـ.",
        "ثم توسعت.",
    ]


def test_era_marker_before_christ_after_a_year_ends_the_sentence() -> None:
    assert texts("بنيت المدينة عام 500 ق.م. ثم هجرت.") == ["بنيت المدينة عام 500 ق.م.", "ثم هجرت."]


def test_full_stop_after_a_closing_bracket_is_not_an_abbreviation() -> None:
    assert texts("أفادت الوكالة (أ.ف.ب). وقال مصدر آخر إن العدد أكبر.") == [
        "أفادت الوكالة (أ.ف.ب).",
        "وقال مصدر آخر إن العدد أكبر.",
    ]


def test_latin_number_abbreviation_needs_a_number_after_it() -> None:
    assert texts("The answer was no. Then they left.") == ["The answer was no.", "Then they left."]


# --- URLs, e-mail, list markers -------------------------------------------------------------


def test_urls_and_emails_are_kept_whole_and_trailing_full_stop_ends_the_sentence() -> None:
    text = (
        "التفاصيل على https://www.example.com/news/2020.05.14/report.html. "
        "وللتواصل: info.desk@example.co.uk. شكرا"
    )
    assert texts(text) == [
        "التفاصيل على https://www.example.com/news/2020.05.14/report.html.",
        "وللتواصل: info.desk@example.co.uk.",
        "شكرا",
    ]


def test_numbered_list_markers_stay_with_their_item() -> None:
    text = "أعلن الجيش ما يلي:\n1. تسليم قاعدة القيارة.\n2. إخلاء معسكر K1.\n٣. انسحاب القوات."
    assert texts(text) == [
        "أعلن الجيش ما يلي:",
        "1. تسليم قاعدة القيارة.",
        "2. إخلاء معسكر K1.",
        "٣. انسحاب القوات.",
    ]


def test_list_marker_after_a_sentence_on_the_same_line() -> None:
    assert texts("وهذه هي البنود. 1. تسليم القاعدة. 2. الانسحاب.") == [
        "وهذه هي البنود.",
        "1. تسليم القاعدة.",
        "2. الانسحاب.",
    ]


# --- quoted speech --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("opening", "closing"),
    [("«", "»"), ('"', '"'), ("“", "”")],
)
def test_full_stop_inside_a_quotation_that_goes_on_does_not_split(
    opening: str, closing: str
) -> None:
    quoted = f"قال الخفاجي: {opening}التحالف موجود في العراق. لكن عمله توقف؟ نعم{closing}."
    text = f"{quoted} وأضاف أن اللجنة ستقرر."
    assert texts(text) == [quoted, "وأضاف أن اللجنة ستقرر."]


def test_terminator_just_before_the_closing_quote_ends_the_sentence_after_it() -> None:
    assert texts('قال رسول: "انتهت العملية." وأضاف أن القوات عادت.') == [
        'قال رسول: "انتهت العملية."',
        "وأضاف أن القوات عادت.",
    ]
    assert texts("قال: «انتهت العملية!» ثم غادر.") == ["قال: «انتهت العملية!»", "ثم غادر."]


def test_nested_quotes_inside_a_quotation_are_handled() -> None:
    quoted = (
        'ولفت إلى أن "الجهاز قبض على ما يسمى "أمني قاطع العظيم". والإرهابي "أبو ياسر" في بغداد".'
    )
    assert texts(quoted + " وتابع البيان.") == [quoted, "وتابع البيان."]


def test_prefixed_quote_opens_a_quotation() -> None:
    quoted = 'معقلا لـ"داعش. والقاعدة" شمالي العراق.'
    assert texts(quoted + " ثم انسحب.") == [quoted, "ثم انسحب."]


def test_unclosed_quote_does_not_swallow_the_rest_of_the_text() -> None:
    text = "أعلنت القيادة إنه “وبناءً على نتائج الحوارات. جرى إعادة المواقع.\nوقال الناطق."
    assert texts(text) == [
        "أعلنت القيادة إنه “وبناءً على نتائج الحوارات.",
        "جرى إعادة المواقع.",
        "وقال الناطق.",
    ]


def test_quotations_do_not_cross_line_breaks() -> None:
    assert texts('قال: "انتهت المرحلة.\nالثانية بدأت" اليوم.') == [
        'قال: "انتهت المرحلة.',
        'الثانية بدأت" اليوم.',
    ]


# --- ellipsis ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        'التحالف الدولي يعود بقوة... ويكبد "داعش" خسائر فادحة في العراق',
        'التحالف الدولي يعود بقوة… ويكبد "داعش" خسائر فادحة في العراق',
        'التحالف الدولي يعود بقوة ... ويكبد "داعش" خسائر فادحة في العراق',
        'التحالف الدولي يعود بقوة...ويكبد "داعش" خسائر فادحة في العراق',
    ],
)
def test_ellipsis_before_a_waw_continuation_does_not_split(text: str) -> None:
    assert texts(text) == [text]


def test_ellipsis_before_another_word_ends_the_sentence() -> None:
    assert texts("انتظر الجميع... الحكومة تعلن النتائج.") == [
        "انتظر الجميع...",
        "الحكومة تعلن النتائج.",
    ]


def test_waw_after_a_plain_full_stop_starts_a_new_sentence() -> None:
    assert texts("انتهت العملية. وقال الناطق إنها نجحت.") == [
        "انتهت العملية.",
        "وقال الناطق إنها نجحت.",
    ]


def test_continuation_punctuation_or_lower_case_latin_after_terminator_does_not_split() -> None:
    assert texts("قال الجيش... ، إن العملية مستمرة.") == ["قال الجيش... ، إن العملية مستمرة."]
    assert texts("ذكر تقرير approx. five strikes in total.") == [
        "ذكر تقرير approx. five strikes in total."
    ]


# --- offsets and speed ----------------------------------------------------------------------


def test_offsets_are_exact_on_a_mixed_text() -> None:
    text = (
        '  نفذ طيران التحالف 18 ضربة.   قال د. يحيى رسول: "دمرنا 39 وكرا. وقبضنا على هدفين".\n\n'
        "وأعلن العراق تسلم معدات بقيمة 5.5 مليون دولار؟! نعم… وبحسب أ.ف.ب. انتهى"
    )
    sentences = split_sentences(text)
    assert sentences[0] == Sentence("نفذ طيران التحالف 18 ضربة.", 2, 28)
    assert [s.text for s in sentences[1:]] == [
        'قال د. يحيى رسول: "دمرنا 39 وكرا. وقبضنا على هدفين".',
        "وأعلن العراق تسلم معدات بقيمة 5.5 مليون دولار؟!",
        "نعم… وبحسب أ.ف.ب. انتهى",
    ]
    for s in sentences:
        assert text[s.start : s.end] == s.text


def test_sentence_is_frozen() -> None:
    sentence = split_sentences("نص.")[0]
    with pytest.raises(AttributeError):
        sentence.start = 3  # type: ignore[misc]


def test_long_article_is_split_quickly() -> None:
    article = "\n\n".join(seed(i) for i in range(5))
    text = (article * 3)[:50_000]
    one_line = text.replace("\n", " ")
    started = time.perf_counter()
    many = split_sentences(text)
    few = split_sentences(one_line)
    assert time.perf_counter() - started < 1.0
    assert len(many) > 200
    assert len(few) > 150
    for s in many:
        assert text[s.start : s.end] == s.text


@pytest.mark.parametrize(
    "text",
    [
        "a" * 50_000 + ".",
        "د. " * 20_000,
        '"x" ' * 15_000,
        '" ' * 30_000,
        "كلمة." * 10_000,
        "a@" * 25_000,
        "x" + " " * 50_000 + "x",
        "\ue000 " * 25_000,
        "زوروا www.example.com. " * 2_000,
    ],
)
def test_pathological_inputs_stay_fast(text: str) -> None:
    started = time.perf_counter()
    split_sentences(text)
    assert time.perf_counter() - started < 2.0


# --- the five seed articles -----------------------------------------------------------------


@pytest.mark.parametrize("index", range(5))
def test_seed_offsets_and_coverage(index: int) -> None:
    text = seed(index)
    sentences = split_sentences(text)
    covered = 0
    for s in sentences:
        assert text[s.start : s.end] == s.text
        gap = text[covered : s.start]
        assert gap.replace("\uf06f", "").strip() == "", f"text dropped before {s.text[:30]!r}"
        covered = s.end
    assert text[covered:].strip() == ""


@pytest.mark.parametrize("index", range(5))
def test_no_seed_sentence_ends_at_an_arabic_comma(index: int) -> None:
    for s in split_sentences(seed(index)):
        assert not s.text.endswith(("،", "؛")), s.text
        assert "\n" not in s.text


def test_seed_000_headline_with_ellipsis_is_one_sentence() -> None:
    got = texts(seed(0))
    assert len(got) == 14
    assert got[0] == 'التحالف الدولي يعود بقوة... ويكبد "داعش" خسائر فادحة في العراق'
    assert got[2] == "Sputnik"
    assert got[3].startswith("وأعلن التحالف الدولي، الذي تتزعمه")
    assert got[3].endswith(
        '"تسديد ضربات موجعة لأماكن اختباء عناصر "داعش" الإرهابي، من قبل طيران '
        "القوات الفرنسية، في قرية مزيرير التابعة لقضاء الحويجة، في كركوك، "
        'شمالي العراق".'
    )
    assert got[7].endswith('إلى القوات العراقية".')
    assert got[8] == "وأضافت"
    assert got[9].startswith("أن تسليم الموقع تم")
    assert got[10].endswith(
        'داخل معسكر "K1"\u00a0 في محافظة كركوك، شمالي البلاد، إلى القوات العراقية.'
    )
    assert got[13] == "مناقشة"


def test_seed_001_byline_date_and_split_after_full_stop() -> None:
    got = texts(seed(1))
    assert len(got) == 14
    assert got[0] == 'بغداد تعلن تدمير التحالف عشرات المخابئ لـ"داعش"'
    assert got[1] == "21 مارس 2021"
    assert got[3] == "+ الخط -"
    assert got[4].endswith('عشرات الأوكار لتنظيم "داعش" الإرهابي.')
    assert got[5].startswith("وبينما أكد مسؤولون أمنيون")
    assert got[6].endswith('وقتل عدد من الإرهابيين".')


def test_seed_002_repeated_headlines_and_unclosed_quote() -> None:
    got = texts(seed(2))
    assert len(got) == 22
    assert got[0] == got[1] == "أمريكا ملتزمة بشركائها العراقيين والسوريين ضد الإرهاب"
    assert got[3].endswith("لدعم شركائنا في العراق وسوريا”.")
    assert got[4].endswith("من ذاكرة رفاقنا الذين سقطوا”.")
    assert got[5] == "مستطردا"
    assert got[13].endswith(
        "“وبناءً على نتائج الحوارات المثمرة بين الحكومة العراقية والتحالف الدولي."
    )
    assert got[14].startswith("جرى إعادة مواقع في قاعدة القيارة")
    assert got[19].endswith(
        "“الاستعانة بقوات التحالف المتبقية للتعاون الاستخباري وتنفيذ ضربات "
        "خاصة تستهدف “داعش” الإرهابي”."
    )


def test_seed_003_quotes_with_nested_names_stay_whole() -> None:
    got = texts(seed(3))
    assert len(got) == 26
    assert got[2] == "متابعة/ المدى"
    assert got[3].endswith("إلا أن المهمة لم تكتمل بعد.")
    assert got[4].startswith("وقالت وزارة الخارجية الأميركية")
    assert got[10].endswith("وفق ما قال متحدث عسكري عراقي، الثلاثاء.")
    assert got[11].startswith("وجرت العمليات، بحسب، اللواء يحيى رسول")
    assert got[19].startswith('ولفت إلى أن "جهاز مكافحة الإرهاب العراقي')
    assert got[19].endswith('بالإضافة إلى القبض على إرهابي من عصابات داعش غرب بغداد".')
    assert '"أمني قاطع العظيم" والإرهابي "أبو ياسر"' in got[19]
    assert got[22].endswith(
        'الجيش (فق10) لتأمين منطقة الثرثار وملاحقة العناصر الإرهابية المطلوبة".'
    )
    assert got[-1] == "Top"


def test_seed_004_each_line_is_split_and_quotes_stay_whole() -> None:
    got = texts(seed(4))
    assert len(got) == 11
    assert got[0].endswith(
        '"الاستعانة بقوات التحالف المتبقية للتعاون الاستخباري وتنفيذ ضربات '
        'خاصة تستهدف "داعش" الإرهابي".'
    )
    assert got[2].endswith("لافتاً إلى أن")
    assert got[3].startswith("عددا من المواقع التي كانت تتواجد فيها قوات التحالف")
    assert got[4].endswith('تكون في حزيران/يونيو المقبل".')
    assert got[9].endswith("التي كانت تشغله بعثة التحالف.")


def test_labelled_seed_sentences_match_the_splitter() -> None:
    """``seeds/sentences.jsonl`` was made with this splitter: ids, texts and offsets agree."""
    path = SEEDS / "sentences.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    expected = [
        (f"seed-{i:03d}-{j:02d}", s.text, s.start, s.end)
        for i in range(5)
        for j, s in enumerate(split_sentences(seed(i)))
    ]
    assert [(r["id"], r["text"], r["start"], r["end"]) for r in rows] == expected
    seen: set[str] = set()
    for number, row in enumerate(rows, start=1):
        check_labels(row["labels"], f"{path.name}:{number}")
        assert row["doc_id"] == row["id"][:8]
        assert row["near_duplicate_of"] is None or row["near_duplicate_of"] in seen
        seen.add(row["id"])


def test_document_sentences_leaves_out_non_arabic_lines() -> None:
    from arabic_events.sentences import document_sentences

    text = "غارات جوية على مواقع التنظيم.\nRead more at example.com\nوقال المتحدث إن القوات انسحبت."
    kept, skipped = document_sentences(text, min_arabic_ratio=0.3)
    assert [i for i, _ in kept] == [0, 2] and skipped == 1
    assert all(text[s.start:s.end] == s.text for _, s in kept)
    assert document_sentences(text, min_arabic_ratio=0.0)[1] == 0
