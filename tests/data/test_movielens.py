"""MovieLens reader: ratings.dat time order (ties keep file order), latin-1 titles, years, and the real ML-1M."""
import pytest

from genrec.config import DataConfig
from genrec.data import load_dataset
from genrec.data.interactions import kcore
from genrec.data.movielens import read_movielens

MOVIES = (
    "10::Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)::Comedy|Romance\n"
    "20::Toy Story (1995)::Animation|Children's|Comedy\n"
    "30::Untitled::Drama\n"
    "40::1900 (Novecento) (1976)::Drama\n"
    "50::Never Rated (2000)::Drama\n"
)
RATINGS = (
    "1::20::5::300\n"
    "1::10::4::100\n"
    "1::30::3::300\n"  # same second as movie 20: file order kept
    "2::10::5::50\n"
    "2::40::2::10\n"
)


def build(folder, ratings=RATINGS, movies=MOVIES, sequences=None):
    folder.mkdir(exist_ok=True)
    (folder / "movies.dat").write_bytes(movies.encode("latin-1"))
    if ratings is not None:
        (folder / "ratings.dat").write_text(ratings)
    if sequences is not None:
        (folder / "sequences.txt").write_text(sequences)
    return str(folder)


def test_ratings_in_time_order(tmp_path):
    data = read_movielens(build(tmp_path / "ml"), "ml")
    assert data.users.tolist() == [1, 2]
    assert [r["movie_id"] for r in data.items] == [10, 20, 30, 40]  # 50 has no rating: not in the table
    assert [s.tolist() for s in data.sequences] == [[1, 2, 3], [4, 1]]


def test_latin1_titles_years_genres(tmp_path):
    amelie, toy, untitled, novecento = read_movielens(build(tmp_path / "ml")).items
    assert amelie["title"] == "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)" and amelie["year"] == 2001
    assert toy["genres"] == ["Animation", "Children's", "Comedy"] and toy["categories"] == [toy["genres"]]
    assert toy["year"] == 1995 and untitled["year"] is None and novecento["year"] == 1976


def test_sequences_txt_gives_the_same_data(tmp_path):
    a = read_movielens(build(tmp_path / "a"))
    b = read_movielens(build(tmp_path / "b", ratings=None, sequences="1 10 20 30\n2 40 10\n3\n"))
    assert [s.tolist() for s in a.sequences] == [s.tolist() for s in b.sequences] and a.items == b.items
    assert b.skipped == {"empty_sequences": 1}


def test_unknown_movie_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="user 2 rated MovieID 99, which .*movies.dat does not list"):
        read_movielens(build(tmp_path / "ml", ratings=RATINGS + "2::99::3::60\n"))


def test_malformed_lines(tmp_path):
    with pytest.raises(ValueError, match=r"ratings.dat:2: expected 'UserID::MovieID::Rating::Timestamp'"):
        read_movielens(build(tmp_path / "a", ratings="1::10::5::1\n1::20::5\n"))
    with pytest.raises(ValueError, match=r"movies.dat:2: expected 'MovieID::Title::Genres'"):
        read_movielens(build(tmp_path / "b", movies="10::A (2000)::Drama\n20::B (2001)\n"))


def test_missing_files_name_the_path(tmp_path):
    folder = tmp_path / "ml"
    build(folder, ratings=None)
    with pytest.raises(FileNotFoundError, match=str(folder / "ratings.dat")):
        read_movielens(str(folder))
    (folder / "movies.dat").unlink()
    (folder / "ratings.dat").write_text(RATINGS)
    with pytest.raises(FileNotFoundError, match=str(folder / "movies.dat")):
        read_movielens(str(folder))


def test_ml1m_counts(data_root):
    data = load_dataset(DataConfig(name="ml-1m", root=data_root))
    assert (data.num_users, data.num_items, data.num_interactions) == (6_040, 3_706, 1_000_209)
    assert data.users[0] == 1 and data.items[0]["movie_id"] == 3186  # user 1's first movie
    assert data.items[0]["title"] == "Girl, Interrupted (1999)"
    # SASRec / BERT4Rec's ML-1M: the 5-core keeps 6,040 users, 3,416 items, 999,611 interactions
    core = kcore({u: s.tolist() for u, s in zip(data.users, data.sequences)}, 5)
    assert (len(core), len({i for s in core.values() for i in s}), sum(map(len, core.values()))) == (
        6_040, 3_416, 999_611)


def test_a_stray_ratings_file_beside_sequences_is_an_error_not_a_silent_switch(tmp_path):
    folder = tmp_path / "both"
    build(folder, ratings="7::10::5::1\n", sequences="1 10 20 30\n2 40 10\n")
    with pytest.raises(ValueError, match="both ratings.dat and sequences.txt"):
        read_movielens(str(folder))
    chosen = read_movielens(str(folder / "sequences.txt"))  # data.path names the file to read
    assert [s.tolist() for s in chosen.sequences] == [[1, 2, 3], [4, 1]]
    assert read_movielens(str(folder / "ratings.dat")).num_users == 1
