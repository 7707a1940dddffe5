"""Chinese numbers as a Chinese reader says them: years digit by digit, dates, times, money,
percentages, decimals, fractions, ranges, temperatures, phone numbers (1 as 幺), 两 before a
measure word; each reading standing for the caller's characters it came from."""

import pytest

from speech_service.text.mapped import MappedText
from speech_service.text.spoken import normalize_for_speech, speak

READ = [
    # years and dates
    ("2024年", "二零二四年"),
    ("1998年香港", "一九九八年香港"),
    ("2024年3月15日", "二零二四年三月十五日"),
    ("2008年8月8号", "二零零八年八月八号"),
    ("是2024-03-15", "是二零二四年三月十五日"),
    ("是2023/12/1", "是二零二三年十二月一日"),
    ("3月8日是妇女节", "三月八日是妇女节"),
    ("12月25号", "十二月二十五号"),
    ("2月有28天", "二月有二十八天"),
    # times
    ("10:30开会", "十点三十分开会"),
    ("8:05出发", "八点零五分出发"),
    ("12:00吃饭", "十二点整吃饭"),
    ("下午2:15", "下午两点十五分"),
    ("是07:30:15", "是七点三十分十五秒"),
    ("2点半见", "两点半见"),
    # money
    ("是¥1,234.56", "是一千二百三十四点五六元"),
    ("是￥100", "是一百元"),
    ("3.50元", "三点五元"),
    ("2元一个", "两元一个"),
    ("是$5", "是五美元"),
    ("是€20", "是二十欧元"),
    ("价格是1,000,000元", "价格是一百万元"),
    # percentages, decimals, fractions, ranges
    ("增长了50%", "增长了百分之五十"),
    ("利率12.5%", "利率百分之十二点五"),
    ("下降-3%", "下降负百分之三"),
    ("圆周率3.14", "圆周率三点一四"),
    ("概率0.05", "概率零点零五"),
    ("3/4的人", "四分之三的人"),
    ("3-5天", "三到五天"),
    ("10～20人", "十到二十人"),
    # counts, ordinals, codes
    ("2个人", "两个人"),
    ("第2名", "第二名"),
    ("2号楼", "二号楼"),
    ("200个", "二百个"),
    ("101只狗", "一百零一只狗"),
    ("10000人", "一万人"),
    ("增长2倍", "增长两倍"),
    ("1203室", "一二零三室"),
    ("302路公交", "三零二路公交"),
    ("代号007", "代号零零七"),
    # phone numbers
    ("电话13812345678", "电话幺三八幺二三四五六七八"),
    ("是138-1234-5678", "是幺三八幺二三四五六七八"),
    ("是+86 13912345678", "是加八六幺三九幺二三四五六七八"),
    ("是010-12345678", "是零幺零幺二三四五六七八"),
    ("是400-123-4567", "是四零零幺二三四五六七"),
    ("请拨打110", "请拨打幺幺零"),
    # temperatures and units
    ("气温25℃", "气温二十五摄氏度"),
    ("气温-5°C", "气温零下五摄氏度"),
    ("重5kg", "重五千克"),
    ("跑了10km", "跑了十公里"),
    ("限速60km/h", "限速六十公里每小时"),
]


@pytest.mark.parametrize("written, read", READ)
def test_chinese_numbers_are_written_as_they_are_read(written, read):
    assert normalize_for_speech(written) == read


def test_the_table_covers_the_forms_it_claims():
    assert len(READ) >= 30


@pytest.mark.parametrize("written", [w for w, _ in READ])
def test_no_digit_reaches_the_model_and_reading_again_changes_nothing(written):
    read = normalize_for_speech(written)
    assert not any(c.isdigit() for c in read)
    assert normalize_for_speech(read) == read


def test_each_reading_stands_for_the_callers_characters():
    text = "会议在2024年3月15日10:30，门票¥1,234.56，打八折即80%。"
    spoken = speak(MappedText.of(text))
    assert spoken.text == "会议在二零二四年三月十五日十点三十分，门票一千二百三十四点五六元，打八折即百分之八十。"
    for said, written in [("二零二四年三月十五日", "2024年3月15日"), ("十点三十分", "10:30"),
                          ("一千二百三十四点五六元", "¥1,234.56"), ("百分之八十", "80%")]:
        start = spoken.text.index(said)
        a, b = spoken.covering(start, start + len(said))
        assert text[a:b] == written
    at = spoken.text.index("门票")
    assert spoken.covering(at, at + 2) == (text.index("门票"), text.index("门票") + 2)  # untouched text maps to itself


@pytest.mark.parametrize("text", ["日本語 3 つ", "今日は2024年です", "한국어 3개", "你好，世界。"])
def test_japanese_korean_and_chinese_without_numbers_are_unchanged(text):
    assert normalize_for_speech(text) == text


def test_english_in_chinese_text_keeps_its_words():
    assert normalize_for_speech("iPhone 15卖5999元") == "iPhone 十五卖五千九百九十九元"
