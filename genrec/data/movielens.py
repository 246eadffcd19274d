"""MovieLens reader (F. M. Harper and J. A. Konstan, "The MovieLens Datasets: History and Context", ACM TiiS 2015).

Every rating counts as one interaction (the usual protocol of SASRec, BERT4Rec and TIGER-style models: the rating
value is ignored), ordered by timestamp. The folder holds ``movies.dat`` and either the official ``ratings.dat`` or
``sequences.txt`` (``UserID MovieID ...`` already in time order, as in ``$GENREC_DATA_ROOT/ml-1m``).
"""
from __future__ import annotations

import logging
import os
import re

import numpy as np

from .amazon import _need, read_sequence_file
from .interactions import InteractionData, from_user_sequences

log = logging.getLogger(__name__)

_YEAR = re.compile(r"\((\d{4})\)\s*$")


def read_movies(path: str) -> dict[int, dict]:
    """Read ``MovieID::Title::Genres`` lines (ISO-8859-1, as GroupLens ships them).

    Returns:
        MovieID -> {"movie_id", "title", "year" (int or None), "genres" (list), "categories" ([genres])}.
    Raises:
        ValueError: a line without three ``::`` fields, a non-integer id or a repeated id (file:line).
    """
    movies: dict[int, dict] = {}
    with open(_need(path, "MovieLens movies.dat"), encoding="latin-1") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split("::")
            try:
                if len(parts) != 3:
                    raise ValueError
                movie_id = int(parts[0])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 'MovieID::Title::Genres', got {line[:80]!r}") from None
            if movie_id in movies:
                raise ValueError(f"{path}:{lineno}: MovieID {movie_id} appears twice")
            title = parts[1].strip()
            year = _YEAR.search(title)
            genres = [g for g in parts[2].strip().split("|") if g]
            movies[movie_id] = {
                "movie_id": movie_id,
                "title": title,
                "year": int(year.group(1)) if year else None,
                "genres": genres,
                "categories": [genres] if genres else None,
            }
    return movies


def read_ratings(path: str) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
    """Read ``UserID::MovieID::Rating::Timestamp`` lines into per-user movie lists in time order, and their times.

    Users come out in increasing UserID order; movies rated in the same second keep their file order (stable sort).
    Returns ``(movies, timestamps)``, both keyed by UserID.

    Raises:
        ValueError: a line without four ``::`` integer fields (file:line).
    """
    by_user: dict[int, list[tuple[int, int]]] = {}
    with open(_need(path, "MovieLens ratings.dat"), encoding="latin-1") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            parts = line.split("::")
            try:
                if len(parts) != 4:
                    raise ValueError
                user, movie, t = int(parts[0]), int(parts[1]), int(parts[3])
                float(parts[2])
            except ValueError:
                raise ValueError(f"{path}:{lineno}: expected 'UserID::MovieID::Rating::Timestamp' (integers), "
                                 f"got {line.strip()[:80]!r}") from None
            by_user.setdefault(user, []).append((t, movie))
    events = {u: sorted(by_user[u], key=lambda e: e[0]) for u in sorted(by_user)}
    return {u: [m for _, m in ev] for u, ev in events.items()}, {u: [t for t, _ in ev] for u, ev in events.items()}


def read_movielens(path: str, name: str = "movielens") -> InteractionData:
    """Read a MovieLens folder (ML-1M layout) into time-ordered sequences.

    Movie ids are renumbered densely 1..N by first appearance (users in UserID order); ``items[i]["movie_id"]`` keeps
    the original id. Movies that nobody rated are not in the item table. Users with no interactions (a bare
    ``UserID`` line in ``sequences.txt``) are skipped and counted.

    Args:
        path: folder with ``movies.dat`` and ONE of ``ratings.dat`` or ``sequences.txt``, or the path of that file.
    Raises:
        FileNotFoundError: the folder, ``movies.dat``, or both interaction files are missing (naming the paths).
        ValueError: both interaction files in the folder (which one is meant is not guessed), a malformed line
            (file:line), or a rated MovieID that ``movies.dat`` does not list.
    """
    chosen = None
    if os.path.isfile(path) and os.path.basename(path) in ("ratings.dat", "sequences.txt"):
        path, chosen = os.path.dirname(path) or ".", os.path.basename(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"MovieLens folder not found: {path!r}")
    ratings, seq_file = os.path.join(path, "ratings.dat"), os.path.join(path, "sequences.txt")
    if chosen is None and os.path.isfile(ratings) and os.path.isfile(seq_file):
        raise ValueError(f"{path!r} holds both ratings.dat and sequences.txt; point data.path at the one to read "
                         f"(e.g. data.path={seq_file}) or remove the other")
    if chosen == "sequences.txt":
        ratings = os.path.join(path, "-")  # read the sequences file even though ratings.dat exists
    user_times = None  # sequences.txt has no timestamps
    if os.path.isfile(ratings):
        source, (user_seqs, user_times) = ratings, read_ratings(ratings)
    elif os.path.isfile(seq_file):
        source = seq_file
        users, seqs = read_sequence_file(seq_file)
        user_seqs = {int(u): s.tolist() for u, s in zip(users, seqs)}
    else:
        raise FileNotFoundError(f"no interactions in {path!r}: expected {ratings!r} "
                                f"(UserID::MovieID::Rating::Timestamp) or {seq_file!r} (UserID MovieID ...)")
    movies = read_movies(os.path.join(path, "movies.dat"))
    empty = [u for u, s in user_seqs.items() if not s]
    for u in empty:
        del user_seqs[u]
    for u, seq in user_seqs.items():
        unknown = [m for m in seq if m not in movies]
        if unknown:
            raise ValueError(f"{source}: user {u} rated MovieID {unknown[0]}, which {os.path.join(path, 'movies.dat')} "
                             f"does not list")
    data = from_user_sequences(name, user_seqs, movies, source, user_times)
    data.users = np.array(list(user_seqs), dtype=np.int64)
    if empty:
        data.skipped["empty_sequences"] = len(empty)
        log.warning("%s: skipped %d users with no items", source, len(empty))
    return data.validate()
