"""Split-file parsing: UCF101, HMDB51, Kinetics CSV, plain CSV; malformed and missing entries."""
from __future__ import annotations

import pytest

from mcl_fast.data.splits import (SplitError, kinetics_relpath, load_split, read_hmdb51, read_kinetics_csv,
                                  read_plain_csv, read_ucf101)


@pytest.fixture()
def ucf_dir(tmp_path):
    d = tmp_path / "ucfTrainTestlist"
    d.mkdir()
    (d / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n3 Basketball\n")
    (d / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
        "Archery/v_Archery_g08_c02.avi 2\n"
        "\n"
        "Basketball/v_Basketball_g09_c01.avi 3\n")
    (d / "testlist01.txt").write_text(
        "Basketball/v_Basketball_g01_c01.avi\nApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    return d


def test_ucf101_train_and_test(ucf_dir):
    train = read_ucf101(ucf_dir, 1, "train")
    assert train.classes == ["ApplyEyeMakeup", "Archery", "Basketball"]
    assert train.entries == [("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", 0),
                             ("Archery/v_Archery_g08_c02.avi", 1),
                             ("Basketball/v_Basketball_g09_c01.avi", 2)]
    test = load_split(ucf_dir / "testlist01.txt")  # classInd.txt found beside it
    assert test.entries == [("Basketball/v_Basketball_g01_c01.avi", 2),
                            ("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", 0)]
    assert test.labels == [2, 0] and len(test) == 2
    assert load_split(f"ucf101:{ucf_dir}:1:train").entries == train.entries


@pytest.mark.parametrize("line, message", [
    ("Archery/v_Archery_g08_c02.avi", "expected 'ClassName/v_x.avi <index>'"),  # label missing
    ("Archery/v_Archery_g08_c02.avi x", "expected 'ClassName/v_x.avi <index>'"),  # not a number
    ("Archery/v_Archery_g08_c02.avi 3", "disagrees with the class folder"),  # wrong label
    ("Skiing/v_Skiing_g08_c02.avi 1", "with a class of classInd.txt"),  # unknown class
    ("v_Archery_g08_c02.avi 2", "with a class of classInd.txt"),  # no class folder
])
def test_ucf101_malformed_line_names_file_and_line(ucf_dir, line, message):
    (ucf_dir / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n\n" + line + "\n")
    with pytest.raises(SplitError) as err:
        read_ucf101(ucf_dir, 1, "train")
    assert f"trainlist01.txt:3:" in str(err.value)
    assert message in str(err.value)


def test_ucf101_bad_class_index_file(ucf_dir):
    (ucf_dir / "classInd.txt").write_text("1 ApplyEyeMakeup\n3 Archery\n")
    with pytest.raises(SplitError, match="without gaps"):
        read_ucf101(ucf_dir, 1, "train")
    (ucf_dir / "classInd.txt").write_text("1 ApplyEyeMakeup\nArchery\n")
    with pytest.raises(SplitError, match=r"classInd.txt:2:"):
        read_ucf101(ucf_dir, 1, "train")
    (ucf_dir / "classInd.txt").write_text("1 ApplyEyeMakeup\n")
    with pytest.raises(SplitError, match="trainlist02.txt: split file not found"):
        read_ucf101(ucf_dir, 2, "train")


def test_missing_videos_error_or_skip(ucf_dir, tmp_path):
    root = tmp_path / "videos"
    (root / "Archery").mkdir(parents=True)
    (root / "Archery" / "v_Archery_g08_c02.avi").write_bytes(b"x")
    with pytest.raises(SplitError) as err:
        read_ucf101(ucf_dir, 1, "train", videos_root=root)
    assert "trainlist01.txt:1:" in str(err.value) and "not found" in str(err.value)
    split = read_ucf101(ucf_dir, 1, "train", videos_root=root, skip_missing=True)
    assert split.entries == [("Archery/v_Archery_g08_c02.avi", 1)]
    assert [(p, where.rsplit(":", 1)[1]) for p, where in split.missing] == [
        ("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "1"), ("Basketball/v_Basketball_g09_c01.avi", "4")]


def test_hmdb51(tmp_path):
    d = tmp_path / "splits"
    d.mkdir()
    (d / "brush_hair_test_split1.txt").write_text("a.avi 1 \nb.avi 2 \nc.avi 0 \n")
    (d / "cartwheel_test_split1.txt").write_text("d.avi 2\ne.avi 1\n")
    (d / "cartwheel_test_split2.txt").write_text("d.avi 1\ne.avi 2\n")
    train = read_hmdb51(d, 1, "train")
    test = load_split(f"hmdb51:{d}:1:test")
    assert train.classes == ["brush_hair", "cartwheel"]
    assert train.entries == [("brush_hair/a.avi", 0), ("cartwheel/e.avi", 1)]
    assert test.entries == [("brush_hair/b.avi", 0), ("cartwheel/d.avi", 1)]
    assert read_hmdb51(d, 2, "test").entries == [("cartwheel/e.avi", 0)]
    (d / "cartwheel_test_split1.txt").write_text("d.avi 2\ne.avi 3\n")
    with pytest.raises(SplitError, match=r"cartwheel_test_split1.txt:2: expected"):
        read_hmdb51(d, 1, "train")
    with pytest.raises(SplitError, match="no '<class>_test_split3.txt'"):
        read_hmdb51(d, 3, "train")


def test_kinetics_csv(tmp_path):
    csv_path = tmp_path / "train.csv"
    csv_path.write_text("label,youtube_id,time_start,time_end,split,is_cc\n"
                        "abseiling,--Ntt2rSPO8,12,22,train,0\n"
                        '"passing American football (in game)",abc_DEF-123,0,10,train,0\n'
                        "abseiling,zzz,305,315,train,0\n")
    split = load_split(csv_path)
    assert split.classes == ["abseiling", "passing American football (in game)"]
    assert split.entries == [("abseiling/--Ntt2rSPO8_000012_000022.mp4", 0),
                             ("passing American football (in game)/abc_DEF-123_000000_000010.mp4", 1),
                             ("abseiling/zzz_000305_000315.mp4", 0)]
    assert kinetics_relpath("a b", "x", 1, 2, underscores=True) == "a_b/x_000001_000002.mp4"
    # Underscored class folders and .mkv files are found when the videos root is given.
    root = tmp_path / "k400"
    (root / "passing_American_football_(in_game)").mkdir(parents=True)
    (root / "passing_American_football_(in_game)" / "abc_DEF-123_000000_000010.mkv").write_bytes(b"x")
    found = read_kinetics_csv(csv_path, videos_root=root, skip_missing=True)
    assert found.entries == [("passing_American_football_(in_game)/abc_DEF-123_000000_000010.mkv", 1)]
    assert len(found.missing) == 2
    # A validation CSV uses the training classes; an unknown class is an error naming the line.
    val = tmp_path / "validate.csv"
    val.write_text("label,youtube_id,time_start,time_end,split\nzumba,q,1,11,val\n")
    with pytest.raises(SplitError, match=r"validate.csv:2: class 'zumba'"):
        read_kinetics_csv(val, classes=split.classes)
    val.write_text("label,youtube_id,time_start,time_end,split\nabseiling,q,one,11,val\n")
    with pytest.raises(SplitError, match=r"validate.csv:2: time_start"):
        read_kinetics_csv(val)
    val.write_text("label,youtube_id,time_start,time_end,split\nabseiling,q,1,11\n")
    with pytest.raises(SplitError, match=r"validate.csv:2: expected 5 columns"):
        read_kinetics_csv(val)
    val.write_text("youtube_id,label,time_start,time_end,split\n")
    with pytest.raises(SplitError, match=r"validate.csv:1: expected the header"):
        read_kinetics_csv(val)


def test_plain_csv(tmp_path):
    p = tmp_path / "list.csv"
    p.write_text("path,label\nx/a.mp4,walk\ny/b.mp4,run\nz/c.mp4,walk\n")
    split = load_split(p)
    assert split.classes == ["run", "walk"]
    assert split.entries == [("x/a.mp4", 1), ("y/b.mp4", 0), ("z/c.mp4", 1)]
    p.write_text("a.mp4,2\nb.mp4,0\n")
    assert read_plain_csv(p).entries == [("a.mp4", 2), ("b.mp4", 0)]
    assert read_plain_csv(p).classes == ["0", "1", "2"]
    p.write_text("path,label\na.mp4,walk\nb.mp4\n")
    with pytest.raises(SplitError, match=r"list.csv:3: expected 'path,label'"):
        read_plain_csv(p)
    with pytest.raises(SplitError, match="not found"):
        load_split(tmp_path / "nope.csv")
    with pytest.raises(ValueError, match="not a UCF101 list"):
        load_split(tmp_path / "whatever.txt")
