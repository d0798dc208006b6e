"""Tests for the bundled NIPS corpus and the UCI bag-of-words reader."""

from __future__ import annotations

import gzip
import pathlib

import numpy as np
import pytest
import scipy.sparse
from sklearn.utils import Bunch

from dask_dpsgd.datasets import (
    load_matrix_market,
    load_nips,
    load_text_folder,
    load_uci_bow,
)
from dask_dpsgd.datasets._base import _load_nips_cached

# Numbers from dask_dpsgd/datasets/descr/nips.rst (the counts table and "Train / test
# split").
N_DOCS = 1500
N_WORDS = 12375
NNZ = 746316
N_TOKENS = 1932366
N_TRAIN, N_TEST = 1350, 150
TRAIN_TOKENS, TEST_TOKENS = 1739158, 193208


# --------------------------------------------------------------------------- #
# load_nips
# --------------------------------------------------------------------------- #
def test_nips_counts_match_readme():
    bunch = load_nips()
    assert isinstance(bunch, Bunch)
    X = bunch.data
    assert isinstance(X, scipy.sparse.csr_matrix)
    assert X.shape == (N_DOCS, N_WORDS)
    assert X.dtype == np.int64
    assert X.nnz == NNZ
    assert int(X.sum()) == N_TOKENS
    assert X.data.min() >= 1  # stored entries are real counts, no explicit zeros
    assert X.has_sorted_indices
    # Every word id occurs in at least one document.
    assert np.all(np.bincount(X.indices, minlength=N_WORDS) > 0)
    # Tokens per document: min 2, median 1,301 (rounded), max 2,307.
    lengths = np.asarray(X.sum(axis=1)).ravel()
    assert lengths.min() == 2
    assert lengths.max() == 2307
    assert round(float(np.median(lengths))) in (1300, 1301)
    np.testing.assert_array_equal(bunch.doc_ids, np.arange(N_DOCS))


def test_nips_matches_source_files():
    """The package copy parses to the same corpus as the shared source files."""
    here = pathlib.Path(__file__).resolve()
    pkg_dir = here.parents[2] / "dask_dpsgd" / "datasets" / "data" / "nips"
    X, words = load_uci_bow(
        pkg_dir / "docword.nips.txt.gz", pkg_dir / "vocab.nips.txt.gz"
    )
    bunch = load_nips()
    assert (X != bunch.data).nnz == 0
    np.testing.assert_array_equal(words, bunch.feature_names)


def test_nips_feature_names():
    names = load_nips().feature_names
    assert isinstance(names, np.ndarray)
    assert names.shape == (N_WORDS,)
    assert all(isinstance(w, str) for w in names)
    assert all(w and w == w.strip() and " " not in w for w in names)
    assert len(set(names.tolist())) == N_WORDS
    # vocab file is alphabetically sorted (descr/nips.rst: ids = lines of sorted vocab).
    assert names.tolist() == sorted(names.tolist())
    assert names[0] == "a2i"


def test_nips_descr():
    descr = load_nips().DESCR
    assert isinstance(descr, str)
    assert "CC BY 4.0" in descr
    assert "Newman" in descr
    assert "UCI" in descr
    assert "RandomState(0)" in descr
    for number in ("1,500", "12,375", "746,316", "1,932,366"):
        assert number in descr


def test_nips_split():
    full = load_nips()
    train = load_nips(subset="train")
    test = load_nips(subset="test")
    perm = np.random.RandomState(0).permutation(N_DOCS)

    for bunch in (full, train, test):
        np.testing.assert_array_equal(bunch.test_indices, perm[:N_TEST])
        np.testing.assert_array_equal(bunch.train_indices, perm[N_TEST:])

    np.testing.assert_array_equal(train.doc_ids, perm[N_TEST:])
    np.testing.assert_array_equal(test.doc_ids, perm[:N_TEST])
    assert train.data.shape == (N_TRAIN, N_WORDS)
    assert test.data.shape == (N_TEST, N_WORDS)
    assert int(train.data.sum()) == TRAIN_TOKENS
    assert int(test.data.sum()) == TEST_TOKENS
    assert train.data.dtype == np.int64
    assert test.data.dtype == np.int64

    # Disjoint and covering.
    assert np.intersect1d(train.doc_ids, test.doc_ids).size == 0
    np.testing.assert_array_equal(
        np.sort(np.concatenate([train.doc_ids, test.doc_ids])), np.arange(N_DOCS)
    )
    # Rows are the full-corpus rows, in split order.
    assert (train.data != full.data[train.doc_ids]).nnz == 0
    assert (test.data != full.data[test.doc_ids]).nnz == 0
    assert train.feature_names.shape == (N_WORDS,)


def test_nips_return_X_y():
    for subset, n in (("all", N_DOCS), ("train", N_TRAIN), ("test", N_TEST)):
        result = load_nips(subset=subset, return_X_y=True)
        assert isinstance(result, tuple)
        assert len(result) == 2
        X, y = result
        assert y is None
        assert isinstance(X, scipy.sparse.csr_matrix)
        assert X.shape == (n, N_WORDS)
        assert X.dtype == np.int64


@pytest.mark.parametrize("subset", ["ALL", "validation", "", None, 0])
def test_nips_invalid_subset(subset):
    with pytest.raises(ValueError, match=r"'all', 'train', 'test'"):
        load_nips(subset=subset)


def test_nips_keyword_only():
    with pytest.raises(TypeError):
        load_nips("train")  # type: ignore[misc]


def _shares(a: np.ndarray, b: np.ndarray) -> bool:
    return np.shares_memory(a, b)


@pytest.mark.parametrize("subset", ["all", "train", "test"])
def test_nips_returns_copies_of_cache(subset):
    cached_X, cached_words, _ = _load_nips_cached()
    bunch = load_nips(subset=subset)
    X = bunch.data
    for arr in (X.data, X.indices, X.indptr):
        assert arr.flags.writeable
        for cached in (cached_X.data, cached_X.indices, cached_X.indptr):
            assert not _shares(arr, cached)
    assert not _shares(bunch.feature_names, cached_words)
    assert bunch.feature_names.flags.writeable

    # Corrupt everything that was returned ...
    X.data[:] = 0
    X.indices[:] = 0
    bunch.feature_names[:] = "corrupted"
    bunch.doc_ids[:] = 0
    bunch.train_indices[:] = 0
    bunch.test_indices[:] = 0

    # ... and nothing leaks into the next call.
    again = load_nips(subset=subset)
    n_rows = {"all": N_DOCS, "train": N_TRAIN, "test": N_TEST}[subset]
    tokens = {"all": N_TOKENS, "train": TRAIN_TOKENS, "test": TEST_TOKENS}[subset]
    assert again.data.shape[0] == n_rows
    assert int(again.data.sum()) == tokens
    assert again.feature_names[0] == "a2i"
    perm = np.random.RandomState(0).permutation(N_DOCS)
    np.testing.assert_array_equal(again.train_indices, perm[N_TEST:])
    np.testing.assert_array_equal(again.test_indices, perm[:N_TEST])
    X2, _ = load_nips(subset=subset, return_X_y=True)
    assert int(X2.sum()) == tokens


def test_nips_is_cached_in_process():
    load_nips()
    hits = _load_nips_cached.cache_info().hits
    load_nips(subset="test")
    assert _load_nips_cached.cache_info().hits == hits + 1
    # The cache itself is protected against in-place edits.
    cached_X, cached_words, _ = _load_nips_cached()
    with pytest.raises(ValueError, match="read-only"):
        cached_X.data[0] = 99
    with pytest.raises(ValueError, match="read-only"):
        cached_words[0] = "x"


# --------------------------------------------------------------------------- #
# load_uci_bow: round trips
# --------------------------------------------------------------------------- #
def _write(path: pathlib.Path, text: str, *, compress: bool) -> pathlib.Path:
    raw = text.encode("utf-8")
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def _docword_text(X: scipy.sparse.spmatrix, *, shuffle: int | None = None) -> str:
    coo = scipy.sparse.coo_matrix(X)
    rows, cols, vals = coo.row, coo.col, coo.data
    if shuffle is not None:
        order = np.random.RandomState(shuffle).permutation(coo.nnz)
        rows, cols, vals = rows[order], cols[order], vals[order]
    lines = [str(X.shape[0]), str(X.shape[1]), str(coo.nnz)]
    lines += [f"{r + 1} {c + 1} {v}" for r, c, v in zip(rows, cols, vals, strict=True)]
    return "\n".join(lines) + "\n"


def _random_counts(seed: int, shape=(7, 11), density=0.4) -> scipy.sparse.csr_matrix:
    rng = np.random.RandomState(seed)
    dense = rng.randint(1, 50, size=shape) * (rng.rand(*shape) < density)
    dense[-1, :] = 0  # an empty last document
    dense[:, -1] = 0  # a word that never occurs
    return scipy.sparse.csr_matrix(dense)


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("shuffle", [None, 3])
def test_uci_bow_round_trip(tmp_path, compress, shuffle):
    X = _random_counts(0)
    words = [f"word{i}" for i in range(X.shape[1])]
    docword = _write(
        tmp_path / "docword.txt", _docword_text(X, shuffle=shuffle), compress=compress
    )
    vocab = _write(tmp_path / "vocab.txt", "\n".join(words) + "\n", compress=compress)

    Y, vocabulary = load_uci_bow(docword, vocab)
    assert isinstance(Y, scipy.sparse.csr_matrix)
    assert Y.shape == X.shape
    assert Y.dtype == np.int64
    assert Y.nnz == X.nnz
    assert Y.has_sorted_indices
    np.testing.assert_array_equal(Y.toarray(), X.toarray())
    assert isinstance(vocabulary, np.ndarray)
    assert vocabulary.tolist() == words

    Z, none = load_uci_bow(str(docword))
    assert none is None
    np.testing.assert_array_equal(Z.toarray(), X.toarray())


def test_uci_bow_gzip_detected_by_magic_not_name(tmp_path):
    X = _random_counts(1)
    text = _docword_text(X)
    plain_named_gz = _write(tmp_path / "docword.txt.gz", text, compress=False)
    gz_named_plain = _write(tmp_path / "docword.txt", text, compress=True)
    for path in (plain_named_gz, gz_named_plain):
        Y, _ = load_uci_bow(path)
        np.testing.assert_array_equal(Y.toarray(), X.toarray())


def test_uci_bow_tolerates_crlf_tabs_and_blank_lines(tmp_path):
    text = "2\r\n3\r\n3\r\n1\t1\t4\r\n\r\n  2 3 1  \r\n2 1 2\r\n\r\n"
    docword = _write(tmp_path / "d.txt", text, compress=False)
    vocab = _write(tmp_path / "v.txt", "a\r\nb\r\nc\r\n", compress=False)
    Y, words = load_uci_bow(docword, vocab)
    np.testing.assert_array_equal(Y.toarray(), [[4, 0, 0], [2, 0, 1]])
    assert words.tolist() == ["a", "b", "c"]


def test_uci_bow_large_counts_exact(tmp_path):
    big = 10**17 + 7
    docword = _write(tmp_path / "d.txt", f"1\n1\n1\n1 1 {big}\n", compress=False)
    Y, _ = load_uci_bow(docword)
    assert int(Y[0, 0]) == big


def test_uci_bow_huge_vocabulary_header(tmp_path):
    """D * W overflows int64: sorting and duplicate detection must still work."""
    n_words = 10**18 - 1
    body = f"2 {n_words} 3\n1 5 1\n1 {n_words} 2\n20 1 4\n"
    docword = _write(tmp_path / "d.txt", f"20\n{n_words}\n4\n{body}", compress=False)
    Y, _ = load_uci_bow(docword)
    assert Y.shape == (20, n_words)
    np.testing.assert_array_equal(Y.indptr, [0, 2] + [3] * 18 + [4])
    np.testing.assert_array_equal(Y.indices, [4, n_words - 1, n_words - 1, 0])
    np.testing.assert_array_equal(Y.data, [1, 2, 3, 4])

    dup = f"20\n{n_words}\n3\n20 {n_words} 1\n2 1 1\n20 {n_words} 2\n"
    docword = _write(tmp_path / "dup.txt", dup, compress=False)
    with pytest.raises(ValueError, match=r"line 6: duplicate .* on line 4"):
        load_uci_bow(docword)


def test_uci_bow_empty_corpus(tmp_path):
    docword = _write(tmp_path / "d.txt", "3\n4\n0\n", compress=False)
    Y, _ = load_uci_bow(docword)
    assert Y.shape == (3, 4)
    assert Y.nnz == 0
    assert Y.dtype == np.int64


def test_uci_bow_vocab_without_trailing_newline(tmp_path):
    docword = _write(tmp_path / "d.txt", "1\n2\n1\n1 2 1\n", compress=False)
    vocab = _write(tmp_path / "v.txt", "x\ny", compress=False)
    _, words = load_uci_bow(docword, vocab)
    assert words.tolist() == ["x", "y"]


# --------------------------------------------------------------------------- #
# load_uci_bow: malformed input
# --------------------------------------------------------------------------- #
GOOD_BODY = "1 1 2\n1 3 1\n2 2 5\n"  # D=2, W=3, NNZ=3


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"malformed header: file ends before line 1"),
        ("2\n3\n", r"malformed header: file ends before line 3"),
        ("2\nthree\n3\n" + GOOD_BODY, r"line 2: malformed header.*W.*'three'"),
        ("2 3\n3\n" + GOOD_BODY, r"line 1: malformed header.*D.*'2 3'"),
        ("2\n3\n-3\n" + GOOD_BODY, r"line 3: malformed header.*NNZ"),
        ("2\n3\n3.0\n" + GOOD_BODY, r"line 3: malformed header.*NNZ"),
        ("\n2\n3\n" + GOOD_BODY, r"line 1: malformed header"),
        ("2\n" + "9" * 19 + "\n3\n" + GOOD_BODY, r"line 2: malformed header.*W has"),
    ],
)
def test_uci_bow_malformed_header(tmp_path, text, match):
    docword = _write(tmp_path / "bad.txt", text, compress=False)
    with pytest.raises(ValueError, match=match) as info:
        load_uci_bow(docword)
    assert "bad.txt" in str(info.value)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("2\n3\n4\n" + GOOD_BODY, r"header declares NNZ = 4 but the file holds 3"),
        ("2\n3\n2\n" + GOOD_BODY, r"header declares NNZ = 2 but the file holds 3"),
        ("2\n3\n0\n" + GOOD_BODY, r"header declares NNZ = 0 but the file holds 3"),
    ],
)
def test_uci_bow_nnz_mismatch(tmp_path, text, match):
    docword = _write(tmp_path / "bad.txt", text, compress=True)
    with pytest.raises(ValueError, match=match) as info:
        load_uci_bow(docword)
    assert "bad.txt" in str(info.value)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("1 1 2\n1 3\n2 2 5\n", r"line 5: expected 3 fields .* got 2: '1 3'"),
        ("1 1 2\n1 3 1 7\n2 2 5\n", r"line 5: expected 3 fields .* got 4"),
        # 2 + 4 fields: the total is a multiple of three but the lines are not.
        ("1 1\n2 1 3 1\n2 2 5\n", r"line 4: expected 3 fields .* got 2"),
    ],
)
def test_uci_bow_wrong_field_count(tmp_path, body, match):
    docword = _write(tmp_path / "bad.txt", "2\n3\n3\n" + body, compress=False)
    with pytest.raises(ValueError, match=match):
        load_uci_bow(docword)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("1 1 2\n0 3 1\n2 2 5\n", r"line 5: docID 0 out of range \[1, 2\]"),
        ("1 1 2\n1 3 1\n3 2 5\n", r"line 6: docID 3 out of range \[1, 2\]"),
        ("1 0 2\n1 3 1\n2 2 5\n", r"line 4: wordID 0 out of range \[1, 3\]"),
        ("1 1 2\n1 4 1\n2 2 5\n", r"line 5: wordID 4 out of range \[1, 3\]"),
        ("1 1 2\n1 3 1\n2 99999 5\n", r"line 6: wordID 99999 out of range"),
    ],
)
def test_uci_bow_ids_out_of_range(tmp_path, body, match):
    docword = _write(tmp_path / "bad.txt", "2\n3\n3\n" + body, compress=False)
    with pytest.raises(ValueError, match=match) as info:
        load_uci_bow(docword)
    assert "bad.txt" in str(info.value)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("1 1 2\n1 3 0\n2 2 5\n", r"line 5: count must be a positive integer, got 0"),
        ("1 1 2\n1 3 -1\n2 2 5\n", r"line 5: count must be a positive .* '-1'"),
        ("1 1 2\n1 3 1.5\n2 2 5\n", r"line 5: count must be a positive .* '1.5'"),
        ("1 1 2\n1 3 1\n2 2 1e3\n", r"line 6: count must be a positive .* '1e3'"),
        ("1 1 2\n1 3 abc\n2 2 5\n", r"line 5: count must be a positive .* 'abc'"),
        ("1 1 2\n1 3 +1\n2 2 5\n", r"line 5: count must be a positive .* '\+1'"),
        ("1 1.0 2\n1 3 1\n2 2 5\n", r"line 4: wordID must be a positive .* '1.0'"),
        ("x 1 2\n1 3 1\n2 2 5\n", r"line 4: docID must be a positive .* 'x'"),
        ("1 1 2\n1 3 1\n2 2 " + "9" * 19 + "\n", r"line 6: count has more than 18"),
    ],
)
def test_uci_bow_bad_counts_and_non_integers(tmp_path, body, match):
    docword = _write(tmp_path / "bad.txt", "2\n3\n3\n" + body, compress=False)
    with pytest.raises(ValueError, match=match) as info:
        load_uci_bow(docword)
    assert "bad.txt" in str(info.value)


def test_uci_bow_duplicate_pairs(tmp_path):
    body = "1 1 2\n2 2 5\n1 3 1\n2 2 1\n"
    docword = _write(tmp_path / "bad.txt", "2\n3\n4\n" + body, compress=False)
    with pytest.raises(
        ValueError,
        match=r"bad\.txt, line 7: duplicate entry for \(docID 2, wordID 2\), "
        r"first given on line 5",
    ):
        load_uci_bow(docword)


def test_uci_bow_vocab_length_mismatch(tmp_path):
    docword = _write(tmp_path / "docword.txt", "2\n3\n3\n" + GOOD_BODY, compress=False)
    short = _write(tmp_path / "short_vocab.txt", "a\nb\n", compress=True)
    long = _write(tmp_path / "long_vocab.txt", "a\nb\nc\nd\n", compress=False)
    with pytest.raises(
        ValueError, match=r"short_vocab\.txt: vocabulary has 2 entries.*W = 3"
    ):
        load_uci_bow(docword, short)
    with pytest.raises(
        ValueError, match=r"long_vocab\.txt: vocabulary has 4 entries.*W = 3"
    ):
        load_uci_bow(docword, long)


def test_uci_bow_vocab_blank_entry(tmp_path):
    docword = _write(tmp_path / "docword.txt", "2\n3\n3\n" + GOOD_BODY, compress=False)
    vocab = _write(tmp_path / "vocab.txt", "a\n\nc\n", compress=False)
    with pytest.raises(ValueError, match=r"vocab\.txt, line 2: blank vocabulary"):
        load_uci_bow(docword, vocab)


def test_uci_bow_corrupt_gzip(tmp_path):
    good = gzip.compress(("2\n3\n3\n" + GOOD_BODY).encode())
    path = tmp_path / "trunc.txt.gz"
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"trunc\.txt\.gz: corrupt gzip"):
        load_uci_bow(path)


# --------------------------------------------------------------------------- #
# load_matrix_market
# --------------------------------------------------------------------------- #
MM_HEADER = "%%MatrixMarket matrix coordinate integer general\n"


def _mm(
    path: pathlib.Path, body: str, *, header: str = MM_HEADER, compress: bool = False
) -> pathlib.Path:
    return _write(path, header + body, compress=compress)


@pytest.mark.parametrize("compress", [False, True])
def test_matrix_market_round_trips_a_corpus(tmp_path, compress):
    import scipy.io

    X = load_nips().data[:30]
    X = X[:, np.flatnonzero(np.asarray(X.sum(axis=0)).ravel())]  # used words only
    scipy.io.mmwrite(tmp_path / "c.mtx", X)
    path = tmp_path / "c.mtx"
    if compress:
        path = _write(tmp_path / "c.mtx.gz", path.read_text(), compress=True)
    bunch = load_matrix_market(path)
    assert isinstance(bunch, Bunch)
    assert isinstance(bunch.data, scipy.sparse.csr_matrix)
    assert bunch.data.dtype == np.int64
    assert bunch.data.has_sorted_indices
    assert (bunch.data != X).nnz == 0
    assert bunch.feature_names is None
    assert bunch.filenames is None


def test_matrix_market_vocab_labels_columns(tmp_path):
    path = _mm(tmp_path / "c.mtx", "2 3 3\n1 1 2\n1 3 1\n2 2 5\n")
    vocab = _write(tmp_path / "v.txt.gz", "alpha\nbeta\ngamma\n", compress=True)
    bunch = load_matrix_market(path, vocab)
    np.testing.assert_array_equal(bunch.feature_names, ["alpha", "beta", "gamma"])
    np.testing.assert_array_equal(bunch.data.toarray(), [[2, 0, 1], [0, 5, 0]])


@pytest.mark.parametrize("n_words", [2, 4])
def test_matrix_market_vocab_length_mismatch_names_both_numbers(tmp_path, n_words):
    path = _mm(tmp_path / "c.mtx", "2 3 3\n1 1 2\n1 3 1\n2 2 5\n")
    vocab = _write(tmp_path / "v.txt", "w\n" * n_words, compress=False)
    with pytest.raises(
        ValueError,
        match=rf"v\.txt: vocabulary has {n_words} entries but .*c\.mtx has 3 columns",
    ):
        load_matrix_market(path, vocab)


def test_matrix_market_dense_pattern_real_and_duplicates(tmp_path):
    dense = _mm(
        tmp_path / "d.mtx",
        "2 2\n1\n0\n3\n4\n",
        header="%%MatrixMarket matrix array integer general\n",
    )
    np.testing.assert_array_equal(
        load_matrix_market(dense).data.toarray(), [[1, 3], [0, 4]]
    )
    pattern = _mm(
        tmp_path / "p.mtx",
        "2 2 2\n1 2\n2 1\n",
        header="%%MatrixMarket matrix coordinate pattern general\n",
    )
    np.testing.assert_array_equal(
        load_matrix_market(pattern).data.toarray(), [[0, 1], [1, 0]]
    )
    real = _mm(
        tmp_path / "r.mtx",
        "1 2 2\n1 1 2.0\n1 2 0.0\n",
        header="%%MatrixMarket matrix coordinate real general\n",
    )
    bunch = load_matrix_market(real)
    assert bunch.data.dtype == np.int64
    assert bunch.data.nnz == 1  # the stored zero is not kept
    dup = _mm(tmp_path / "dup.mtx", "1 2 2\n1 1 2\n1 1 3\n")
    np.testing.assert_array_equal(load_matrix_market(dup).data.toarray(), [[5, 0]])


@pytest.mark.parametrize(
    ("header", "body", "match"),
    [
        (
            MM_HEADER,
            "2 3 2\n1 1 x\n2 2 3\n",
            r"bad\.mtx: not a valid Matrix Market coordinate file \(Line 3",
        ),
        (
            MM_HEADER,
            "2 3 2\n1 1 -4\n2 2 3\n",
            r"bad\.mtx: entry \(row 1, column 1\) is -4 .*non-negative",
        ),
        (
            "%%MatrixMarket matrix coordinate real general\n",
            "2 3 2\n1 1 1\n2 3 2.5\n",
            r"entry \(row 2, column 3\) is 2\.5 .*counts must be integers",
        ),
        (
            "%%MatrixMarket matrix coordinate real general\n",
            "2 3 1\n2 1 nan\n",
            r"entry \(row 2, column 1\) is nan .*finite",
        ),
        (
            "%%MatrixMarket matrix coordinate complex general\n",
            "2 3 1\n1 1 1 1\n",
            r"field is 'complex'",
        ),
        (MM_HEADER, "0 3 0\n", r"shape \(0, 3\).*at least one document"),
        ("docword\n", "2\n3\n0\n", r"bad\.mtx: not a valid Matrix Market file"),
        (MM_HEADER, "2 3 2\n1 9 1\n2 2 3\n", r"bad\.mtx: not a valid Matrix Market"),
    ],
)
def test_matrix_market_rejects_bad_content(tmp_path, header, body, match):
    path = _mm(tmp_path / "bad.mtx", body, header=header)
    with pytest.raises(ValueError, match=match):
        load_matrix_market(path)


# --------------------------------------------------------------------------- #
# load_text_folder
# --------------------------------------------------------------------------- #
def _texts(folder: pathlib.Path, docs: dict[str, str]) -> pathlib.Path:
    folder.mkdir(exist_ok=True)
    for name, text in docs.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def test_text_folder_counts_words_of_each_file(tmp_path):
    folder = _texts(
        tmp_path / "docs",
        {
            "b.txt": "Spike trains of the cortex; spike timing.",
            "a.txt": "The naïve kernel: kernel margin.",
            "c.txt": "",
            "notes.md": "ignored: not a .txt file",
        },
    )
    (folder / "sub").mkdir()
    (folder / "sub" / "d.txt").write_text("ignored subfolder", encoding="utf-8")
    # A byte-order mark is allowed and is not part of the first word.
    (folder / "e.txt").write_bytes("\ufeffkernel".encode("utf-8"))
    bunch = load_text_folder(folder)
    assert isinstance(bunch, Bunch)
    assert [pathlib.Path(f).name for f in bunch.filenames] == [
        "a.txt",
        "b.txt",
        "c.txt",
        "e.txt",
    ]
    X = bunch.data
    assert isinstance(X, scipy.sparse.csr_matrix)
    assert X.dtype == np.int64
    words = bunch.feature_names.tolist()
    assert words == sorted(
        [
            "the",
            "naïve",
            "kernel",
            "margin",
            "spike",
            "trains",
            "of",
            "cortex",
            "timing",
        ]
    )
    col = {w: i for i, w in enumerate(words)}
    assert X[0, col["kernel"]] == 2
    assert X[0, col["naïve"]] == 1
    assert X[1, col["spike"]] == 2
    assert X[1, col["kernel"]] == 0
    assert X[2].nnz == 0  # the empty file is an empty document
    assert X[3, col["kernel"]] == 1


def test_text_folder_passes_count_vectorizer_options(tmp_path):
    folder = _texts(
        tmp_path / "docs",
        {
            "1.txt": "the neuron fires",
            "2.txt": "the neuron rests",
            "3.txt": "the kernel trick",
        },
    )
    bunch = load_text_folder(folder, stop_words="english", min_df=2)
    assert bunch.feature_names.tolist() == ["neuron"]
    np.testing.assert_array_equal(bunch.data.toarray().ravel(), [1, 1, 0])


def test_text_folder_names_the_file_that_is_not_utf8(tmp_path):
    folder = _texts(tmp_path / "docs", {"good.txt": "plain words"})
    (folder / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1\.txt: not valid UTF-8 .*byte 3"):
        load_text_folder(folder)


def test_text_folder_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no texts here")
    with pytest.raises(ValueError, match=r"empty: no \*\.txt files"):
        load_text_folder(empty)
    with pytest.raises(ValueError, match=r"readme\.md: not a directory"):
        load_text_folder(empty / "readme.md")
    folder = _texts(tmp_path / "docs", {"1.txt": "the and of", "2.txt": "a the"})
    with pytest.raises(ValueError, match=r"docs \(2 \.txt files\): CountVectorizer"):
        load_text_folder(folder, stop_words="english")
    with pytest.raises(ValueError, match="input, encoding cannot be passed"):
        load_text_folder(folder, input="filename", encoding="latin-1")
