"""Loaders for bag-of-words corpora in the UCI docword format.

The UCI Machine Learning Repository distributes its "Bag of Words" corpora as a
``docword.<name>.txt`` file and a ``vocab.<name>.txt`` file.  The docword file
starts with three header lines holding the number of documents ``D``, the size of
the vocabulary ``W`` and the number of non-zero entries ``NNZ``, followed by
``NNZ`` lines ``docID wordID count`` with 1-based ids.  Line ``i`` of the vocab
file is the word with id ``i``.

:func:`load_uci_bow` reads any such pair of files, :func:`load_nips` returns the
NIPS full-papers corpus bundled with this package.  :func:`load_matrix_market` reads
a document-term count matrix in the Matrix Market format (documents are rows), and
:func:`load_text_folder` counts the words of a folder of UTF-8 ``*.txt`` files with
:class:`sklearn.feature_extraction.text.CountVectorizer`.
"""

from __future__ import annotations

import gzip
import io
import pathlib
from collections.abc import Callable, Iterable
from functools import lru_cache
from importlib import resources

import numpy as np
import scipy.sparse
from sklearn.utils import Bunch

__all__ = ["corpus_format", "load_corpus", "load_matrix_market", "load_nips",
           "load_text_folder", "load_uci_bow"]

_GZIP_MAGIC = b"\x1f\x8b"
_FIELDS = ("docID", "wordID", "count")
_HEADER_FIELDS = ("D", "W", "NNZ")
# bytes.split() splits on exactly these ASCII whitespace bytes.
_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[ord("0") : ord("9") + 1] = True
# int64 holds every 18-digit decimal number.
_MAX_DIGITS = 18

_NIPS_PACKAGE = "dask_dpsgd.datasets"
_NIPS_N_DOCS = 1500
_NIPS_N_TEST = 150
_NIPS_SUBSETS = ("all", "train", "test")


# --------------------------------------------------------------------------- #
# Generic UCI bag-of-words reader
# --------------------------------------------------------------------------- #
def _maybe_gunzip(raw: bytes, name: str) -> bytes:
    """Decompress ``raw`` if it starts with the gzip magic bytes."""
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError) as exc:
        raise ValueError(f"{name}: corrupt gzip stream ({exc})") from exc


def _parse_header(text: bytes, name: str) -> tuple[tuple[int, int, int], bytes]:
    """Split the three header lines ``D``, ``W``, ``NNZ`` off a docword file.

    Returns the three header values and the remaining body.
    """
    values = []
    rest = text
    for lineno, field in enumerate(_HEADER_FIELDS, start=1):
        line, sep, rest = rest.partition(b"\n")
        if not sep and not line.strip():
            raise ValueError(
                f"{name}: malformed header: file ends before line {lineno} "
                f"(expected three header lines D, W, NNZ)"
            )
        token = line.strip()
        if not token.isdigit():
            shown = line.decode("utf-8", "replace").rstrip("\r")
            raise ValueError(
                f"{name}, line {lineno}: malformed header: expected a single "
                f"non-negative integer {field}, got {shown!r}"
            )
        if len(token) > _MAX_DIGITS:
            raise ValueError(
                f"{name}, line {lineno}: malformed header: {field} has more than "
                f"{_MAX_DIGITS} digits"
            )
        values.append(int(token))
    n_docs, n_words, nnz = values
    return (n_docs, n_words, nnz), rest


def _bad_token_error(
    body: bytes, token_start: int, token_index: int, lineno: int, name: str
) -> ValueError:
    """Build the error for a token that is not a plain decimal integer."""
    ws = b" \t\n\r\x0b\x0c"
    end = token_start
    while end < len(body) and body[end] not in ws:
        end += 1
    token = body[token_start:end].decode("utf-8", "replace")
    field = _FIELDS[token_index % 3]
    return ValueError(
        f"{name}, line {lineno}: {field} must be a positive integer, got {token!r}"
    )


def _parse_docword(
    raw: bytes, name: str
) -> tuple[scipy.sparse.csr_matrix, tuple[int, int, int]]:
    """Parse the (already read, possibly gzipped) bytes of a docword file."""
    text = _maybe_gunzip(raw, name)
    (n_docs, n_words, nnz), body = _parse_header(text, name)
    first_body_line = len(_HEADER_FIELDS) + 1  # 1-based file line of body line 0

    buf = np.frombuffer(body, dtype=np.uint8)
    is_ws = _WHITESPACE[buf]
    # A token starts at a non-whitespace byte preceded by whitespace (or BOF).
    prev_ws = np.empty_like(is_ws)
    prev_ws[:1] = True
    prev_ws[1:] = is_ws[:-1]
    starts = np.flatnonzero(~is_ws & prev_ws)
    newlines = np.flatnonzero(buf == ord("\n"))
    # 0-based body line of each token (number of newlines before it).
    token_line = np.searchsorted(newlines, starts)

    # Every non-blank line must hold exactly three fields.
    per_line = np.bincount(token_line, minlength=1)
    bad_lines = np.flatnonzero((per_line != 0) & (per_line != 3))
    if bad_lines.size:
        line = int(bad_lines[0])
        lo = 0 if line == 0 else int(newlines[line - 1]) + 1
        hi = int(newlines[line]) if line < newlines.size else len(body)
        shown = body[lo:hi].decode("utf-8", "replace").rstrip("\r")
        raise ValueError(
            f"{name}, line {line + first_body_line}: expected 3 fields "
            f"'docID wordID count', got {int(per_line[line])}: {shown!r}"
        )

    n_entries = starts.size // 3
    if n_entries != nnz:
        raise ValueError(
            f"{name}: header declares NNZ = {nnz} but the file holds "
            f"{n_entries} entries"
        )

    # Only plain decimal digits are allowed inside tokens: this rules out signs,
    # decimal points, exponents and any garbage before numpy parses the numbers.
    bad_bytes = np.flatnonzero(~is_ws & ~_DIGIT[buf])
    if bad_bytes.size:
        tok = int(np.searchsorted(starts, bad_bytes[0], side="right")) - 1
        raise _bad_token_error(
            body,
            int(starts[tok]),
            tok,
            int(token_line[tok]) + first_body_line,
            name,
        )
    # A token ends at a non-whitespace byte followed by whitespace (or EOF).
    next_ws = np.empty_like(is_ws)
    next_ws[-1:] = True
    next_ws[:-1] = is_ws[1:]
    ends = np.flatnonzero(~is_ws & next_ws)
    too_long = np.flatnonzero(ends - starts + 1 > _MAX_DIGITS)
    if too_long.size:
        tok = int(too_long[0])
        raise ValueError(
            f"{name}, line {int(token_line[tok]) + first_body_line}: "
            f"{_FIELDS[tok % 3]} has more than {_MAX_DIGITS} digits"
        )

    if starts.size:
        # Safe now: every token is a run of at most 18 decimal digits.
        values = np.fromstring(body, dtype=np.int64, sep=" ")
    else:
        # (np.fromstring would parse a whitespace-only body as [0].)
        values = np.empty(0, dtype=np.int64)
    if values.size != starts.size:  # pragma: no cover - guarded by checks above
        raise ValueError(f"{name}: could not parse all integer fields")
    triples = values.reshape(-1, 3)
    doc, word, count = triples[:, 0], triples[:, 1], triples[:, 2]
    entry_line = token_line[::3] + first_body_line

    for field, ids, upper in (("docID", doc, n_docs), ("wordID", word, n_words)):
        bad = np.flatnonzero((ids < 1) | (ids > upper))
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"{name}, line {int(entry_line[i])}: {field} {int(ids[i])} out of "
                f"range [1, {upper}] ({np.count_nonzero((ids < 1) | (ids > upper))}"
                f" offending entries)"
            )
    bad = np.flatnonzero(count < 1)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}, line {int(entry_line[i])}: count must be a positive "
            f"integer, got {int(count[i])}"
        )

    # Sort by (doc, word); file order is usually already sorted, so this is cheap.
    if n_docs * n_words < np.iinfo(np.int64).max:
        order = np.argsort((doc - 1) * n_words + (word - 1), kind="stable")
    else:  # the flat key would overflow int64
        order = np.lexsort((word, doc))
    sorted_doc, sorted_word = doc[order], word[order]
    dup = np.flatnonzero(
        (sorted_doc[1:] == sorted_doc[:-1]) & (sorted_word[1:] == sorted_word[:-1])
    )
    if dup.size:
        first, second = int(order[dup[0]]), int(order[dup[0] + 1])
        raise ValueError(
            f"{name}, line {int(entry_line[second])}: duplicate entry for "
            f"(docID {int(doc[second])}, wordID {int(word[second])}), first given "
            f"on line {int(entry_line[first])}"
        )

    index_dtype = (
        np.int32 if max(nnz, n_words, n_docs) < np.iinfo(np.int32).max else np.int64
    )
    indptr = np.zeros(n_docs + 1, dtype=index_dtype)
    np.cumsum(np.bincount(doc - 1, minlength=n_docs), out=indptr[1:])
    indices = (sorted_word - 1).astype(index_dtype)
    data = count[order].astype(np.int64, copy=False)
    matrix = scipy.sparse.csr_matrix(
        (data, indices, indptr), shape=(n_docs, n_words), copy=False
    )
    matrix.has_sorted_indices = True
    return matrix, (n_docs, n_words, nnz)


def _parse_vocab(raw: bytes, name: str) -> np.ndarray:
    """Parse the (already read, possibly gzipped) bytes of a vocab file."""
    try:
        text = _maybe_gunzip(raw, name).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: vocabulary is not valid UTF-8 ({exc})") from exc
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline terminating the last entry
    words = [line.rstrip("\r") for line in lines]
    for lineno, word in enumerate(words, start=1):
        if not word.strip():
            raise ValueError(f"{name}, line {lineno}: blank vocabulary entry")
    vocab = np.empty(len(words), dtype=object)
    vocab[:] = words
    return vocab


def load_uci_bow(
    docword: str | pathlib.Path, vocab: str | pathlib.Path | None = None
) -> tuple[scipy.sparse.csr_matrix, np.ndarray | None]:
    """Load a bag-of-words corpus in the UCI docword format.

    Parameters
    ----------
    docword : str or path-like
        Path of a ``docword`` file, plain text or gzip-compressed (detected from
        the magic bytes, not from the file name).  Its first three lines hold
        ``D`` (number of documents), ``W`` (vocabulary size) and ``NNZ`` (number
        of entries); each following non-blank line is ``docID wordID count`` with
        1-based ids.
    vocab : str or path-like, optional
        Path of the matching ``vocab`` file (plain or gzip-compressed), one word
        per line, line ``i`` being word id ``i``.  It must hold exactly ``W``
        entries.

    Returns
    -------
    X : scipy.sparse.csr_matrix of shape (D, W), dtype int64
        Document-term count matrix; row ``d`` is document ``d + 1`` of the file,
        column ``w`` is word id ``w + 1``.  Column indices are sorted.
    vocabulary : numpy.ndarray of str, shape (W,), or None
        Object array of the words, ``vocabulary[w]`` labelling column ``w``;
        ``None`` when ``vocab`` is not given.

    Raises
    ------
    ValueError
        If the header is malformed, a line does not have three fields, the number
        of entries differs from ``NNZ``, a field is not a plain decimal integer,
        an id is outside ``[1, D]`` / ``[1, W]``, a count is not positive, a
        ``(docID, wordID)`` pair occurs twice, or the vocabulary does not have
        ``W`` non-blank entries.  Nothing is ever dropped or clipped silently.

    Examples
    --------
    >>> X, words = load_uci_bow("docword.kos.txt", "vocab.kos.txt")  # doctest: +SKIP
    >>> X.shape
    (3430, 6906)
    """
    docword_path = pathlib.Path(docword)
    matrix, (_, n_words, _) = _parse_docword(
        docword_path.read_bytes(), str(docword_path)
    )
    if vocab is None:
        return matrix, None
    vocab_path = pathlib.Path(vocab)
    words = _parse_vocab(vocab_path.read_bytes(), str(vocab_path))
    _check_vocab_length(words, n_words, str(vocab_path), str(docword_path))
    return matrix, words


def _check_vocab_length(
    words: np.ndarray, n_words: int, vocab_name: str, docword_name: str
) -> None:
    if words.shape[0] != n_words:
        raise ValueError(
            f"{vocab_name}: vocabulary has {words.shape[0]} entries but "
            f"{docword_name} declares W = {n_words}"
        )


# --------------------------------------------------------------------------- #
# Bundled NIPS corpus
# --------------------------------------------------------------------------- #
@lru_cache(maxsize=1)
def _load_nips_cached() -> tuple[scipy.sparse.csr_matrix, np.ndarray, str]:
    """Parse the bundled NIPS files once per process.

    The returned objects are shared by every caller of this function; public
    functions must hand out copies only.
    """
    root = resources.files(_NIPS_PACKAGE)
    data_dir = root.joinpath("data").joinpath("nips")
    docword = data_dir.joinpath("docword.nips.txt.gz")
    vocab = data_dir.joinpath("vocab.nips.txt.gz")
    matrix, (_, n_words, _) = _parse_docword(docword.read_bytes(), str(docword))
    words = _parse_vocab(vocab.read_bytes(), str(vocab))
    _check_vocab_length(words, n_words, str(vocab), str(docword))
    descr = root.joinpath("descr").joinpath("nips.rst").read_text(encoding="utf-8")
    # Read-only so that an accidental in-place edit of the cache fails loudly.
    for array in (matrix.data, matrix.indices, matrix.indptr, words):
        array.flags.writeable = False
    return matrix, words, descr


def _nips_split() -> tuple[np.ndarray, np.ndarray]:
    """Return ``(train_indices, test_indices)`` of the baseline NIPS split."""
    perm = np.random.RandomState(0).permutation(_NIPS_N_DOCS)
    return perm[_NIPS_N_TEST:].copy(), perm[:_NIPS_N_TEST].copy()


def load_nips(
    *, subset: str = "all", return_X_y: bool = False
) -> Bunch | tuple[scipy.sparse.csr_matrix, None]:
    """Load the NIPS full-papers bag-of-words corpus (bundled, no download).

    1,500 NIPS conference papers as word counts over a 12,375-word vocabulary,
    converted from the UCI "Bag of Words" data set (Newman, 2008; CC BY 4.0).
    See ``DESCR`` for origin, counts and licence.

    =================   ==========
    Documents           1,500
    Vocabulary          12,375
    Non-zero entries    746,316
    Tokens              1,932,366
    =================   ==========

    Parameters
    ----------
    subset : {"all", "train", "test"}, default="all"
        Which documents to return.  The fixed baseline split is
        ``perm = numpy.random.RandomState(0).permutation(1500)``,
        ``test = perm[:150]``, ``train = perm[150:]`` (1,350 / 150 documents);
        the rows of ``data`` follow that order.
    return_X_y : bool, default=False
        If True, return ``(data, None)`` instead of a Bunch, like the
        unsupervised loaders of :mod:`sklearn.datasets`.

    Returns
    -------
    data : sklearn.utils.Bunch
        Dictionary-like object with attributes

        data : scipy.sparse.csr_matrix of shape (n_documents, 12375), dtype int64
            Document-term counts of the requested subset.
        feature_names : numpy.ndarray of str, shape (12375,)
            The word of each column.
        DESCR : str
            Description of the corpus.
        doc_ids : numpy.ndarray of int, shape (n_documents,)
            0-based row index in the full corpus of each returned document.
        train_indices : numpy.ndarray of int, shape (1350,)
            Full-corpus row indices of the training documents.
        test_indices : numpy.ndarray of int, shape (150,)
            Full-corpus row indices of the test documents.

    (data, None) : tuple if ``return_X_y`` is True
        The count matrix and ``None`` (there is no target).

    Raises
    ------
    ValueError
        If ``subset`` is not one of ``"all"``, ``"train"``, ``"test"``.

    Notes
    -----
    The files are parsed once per process and cached; every call returns fresh
    copies, so modifying the result never affects later calls.

    Examples
    --------
    >>> from dask_dpsgd.datasets import load_nips
    >>> bunch = load_nips(subset="train")
    >>> bunch.data.shape
    (1350, 12375)
    """
    if subset not in _NIPS_SUBSETS:
        raise ValueError(
            f"subset must be one of {', '.join(map(repr, _NIPS_SUBSETS))}; "
            f"got {subset!r}"
        )
    matrix, words, descr = _load_nips_cached()
    train_indices, test_indices = _nips_split()
    if subset == "all":
        doc_ids = np.arange(matrix.shape[0])
    elif subset == "train":
        doc_ids = train_indices.copy()
    else:
        doc_ids = test_indices.copy()
    # Row fancy indexing builds new, writeable buffers: never views of the cache.
    data = matrix[doc_ids]
    if return_X_y:
        return data, None
    return Bunch(
        data=data,
        feature_names=words.copy(),
        DESCR=descr,
        doc_ids=doc_ids,
        train_indices=train_indices,
        test_indices=test_indices,
    )


# --------------------------------------------------------------------------- #
# Matrix Market count matrices
# --------------------------------------------------------------------------- #
def _first_bad_entry(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, bad: np.ndarray
) -> str:
    i = int(np.flatnonzero(bad)[0])
    value = values[i].item()
    return (
        f"entry (row {int(rows[i]) + 1}, column {int(cols[i]) + 1}) is {value!r}"
        f" ({int(np.count_nonzero(bad))} offending entries)"
    )


def load_matrix_market(
    path: str | pathlib.Path, vocab: str | pathlib.Path | None = None
) -> Bunch:
    """Load a document-term count matrix stored in the Matrix Market format.

    Parameters
    ----------
    path : str or path-like
        A Matrix Market file (``.mtx``), plain or gzip-compressed (detected from
        the magic bytes), read with :func:`scipy.io.mmread`.  Row ``d`` is
        document ``d``, column ``w`` is word ``w``; coordinate (sparse) and array
        (dense) formats with an ``integer``, ``real`` or ``pattern`` field are
        accepted (``pattern`` entries count 1).  Every value must be a
        non-negative integer (``3.0`` is fine, ``2.5`` is not); duplicate
        coordinates are summed.
    vocab : str or path-like, optional
        Vocabulary file (plain or gzip-compressed), one word per line, line ``i``
        labelling column ``i``; it must have one line per column.

    Returns
    -------
    data : sklearn.utils.Bunch
        Dictionary-like object with attributes

        data : scipy.sparse.csr_matrix of shape (n_documents, n_words), dtype int64
            Document-term counts, sorted column indices, no stored zeros.
        feature_names : numpy.ndarray of str, shape (n_words,), or None
            The word of each column (``None`` without ``vocab``).
        filenames : None
            There is one file for all documents (kept for the same keys as
            :func:`load_text_folder`).

    Raises
    ------
    ValueError
        If the file is not valid Matrix Market, holds complex, non-finite,
        negative or non-integer values, has no rows or no columns, or the
        vocabulary has blank lines or a number of entries different from the
        number of columns (both numbers are given).

    Examples
    --------
    >>> corpus = load_matrix_market("counts.mtx", "vocab.txt")  # doctest: +SKIP
    >>> corpus.data.shape
    (1500, 12375)
    """
    import scipy.io

    mm_path = pathlib.Path(path)
    name = str(mm_path)
    raw = _maybe_gunzip(mm_path.read_bytes(), name)
    try:
        n_rows, n_cols, _, fmt, field, _ = scipy.io.mminfo(io.BytesIO(raw))
    except (ValueError, IndexError, TypeError) as exc:
        raise ValueError(f"{name}: not a valid Matrix Market file ({exc})") from exc
    if field == "complex":
        raise ValueError(
            f"{name}: Matrix Market field is 'complex'; word counts must be "
            f"non-negative integers (field 'integer', 'real' or 'pattern')"
        )
    if n_rows == 0 or n_cols == 0:
        raise ValueError(
            f"{name}: the matrix has shape ({n_rows}, {n_cols}); a corpus needs at "
            f"least one document (row) and one word (column)"
        )
    try:
        matrix = scipy.io.mmread(io.BytesIO(raw))
    except (ValueError, IndexError, TypeError, OverflowError) as exc:
        raise ValueError(
            f"{name}: not a valid Matrix Market {fmt} file ({exc}); expected "
            f"non-negative integer counts"
        ) from exc
    coo = scipy.sparse.coo_matrix(matrix)
    rows, cols, values = coo.row, coo.col, np.asarray(coo.data)
    if not np.issubdtype(values.dtype, np.number) or np.iscomplexobj(values):
        raise ValueError(
            f"{name}: entries of dtype {values.dtype} are not real numbers; word "
            f"counts must be non-negative integers"
        )
    if values.dtype.kind == "f":
        bad = ~np.isfinite(values)
        if bad.any():
            raise ValueError(
                f"{name}: {_first_bad_entry(rows, cols, values, bad)}; counts must be "
                f"finite"
            )
    bad = values < 0
    if bad.any():
        raise ValueError(
            f"{name}: {_first_bad_entry(rows, cols, values, bad)}; counts must be "
            f"non-negative"
        )
    if values.dtype.kind == "f":
        bad = (values != np.floor(values)) | (values >= 2.0**63)
        if bad.any():
            raise ValueError(
                f"{name}: {_first_bad_entry(rows, cols, values, bad)}; counts must be "
                f"integers"
            )
    data = scipy.sparse.csr_matrix(
        (values.astype(np.int64), (rows, cols)), shape=coo.shape, dtype=np.int64
    )
    data.sum_duplicates()
    data.eliminate_zeros()
    data.sort_indices()
    words = None
    if vocab is not None:
        vocab_path = pathlib.Path(vocab)
        words = _parse_vocab(vocab_path.read_bytes(), str(vocab_path))
        if words.shape[0] != data.shape[1]:
            raise ValueError(
                f"{vocab_path}: vocabulary has {words.shape[0]} entries but {name} "
                f"has {data.shape[1]} columns (one word per column)"
            )
    return Bunch(data=data, feature_names=words, filenames=None)


# --------------------------------------------------------------------------- #
# A folder of text files
# --------------------------------------------------------------------------- #
_FOLDER_RESERVED = ("input", "encoding", "decode_error")


def load_text_folder(path: str | pathlib.Path, **count_vectorizer_kwargs) -> Bunch:
    """Count the words of every ``*.txt`` file of a folder (one file, one document).

    Parameters
    ----------
    path : str or path-like
        A directory.  Its ``*.txt`` files (not those of subdirectories), in sorted
        order of name, are the documents; each must be valid UTF-8 (a byte-order
        mark is allowed).
    **count_vectorizer_kwargs
        Passed to :class:`sklearn.feature_extraction.text.CountVectorizer`, e.g.
        ``max_df=0.95, min_df=2, stop_words="english"``.  ``input``, ``encoding``
        and ``decode_error`` are not accepted: the files are read here, as UTF-8.

    Returns
    -------
    data : sklearn.utils.Bunch
        Dictionary-like object with attributes

        data : scipy.sparse.csr_matrix of shape (n_files, n_words), dtype int64
            Document-term counts; row ``i`` is ``filenames[i]``.
        feature_names : numpy.ndarray of str, shape (n_words,)
            The word of each column (``CountVectorizer.get_feature_names_out()``).
        filenames : numpy.ndarray of str, shape (n_files,)
            Path of the file of each row.

    Raises
    ------
    ValueError
        If ``path`` is not a directory or holds no ``*.txt`` file, a file is not
        valid UTF-8 (the message names the file and the byte offset), a reserved
        keyword is given, or CountVectorizer rejects the corpus or its parameters
        (e.g. no word is left after ``min_df``/``max_df``/stop words); the message
        names the folder.

    Examples
    --------
    >>> corpus = load_text_folder("papers/", min_df=2)  # doctest: +SKIP
    >>> corpus.data.shape, corpus.filenames[:1]
    ((20, 431), array(['papers/001.txt'], dtype='<U14'))
    """
    from sklearn.feature_extraction.text import CountVectorizer

    folder = pathlib.Path(path)
    reserved = [k for k in _FOLDER_RESERVED if k in count_vectorizer_kwargs]
    if reserved:
        raise ValueError(
            f"load_text_folder reads the files itself, as UTF-8: "
            f"{', '.join(reserved)} cannot be passed to CountVectorizer"
        )
    if not folder.is_dir():
        raise ValueError(f"{folder}: not a directory (expected a folder of .txt files)")
    files = sorted(p for p in folder.glob("*.txt") if p.is_file())
    if not files:
        raise ValueError(
            f"{folder}: no *.txt files in this folder (subfolders are not searched)"
        )
    docs = []
    for file in files:
        raw = file.read_bytes()
        try:
            docs.append(raw.decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"{file}: not valid UTF-8 text (byte {exc.start}: "
                f"{raw[exc.start : exc.start + 1]!r}); convert it to UTF-8 (e.g. "
                f"iconv -t UTF-8) or move it out of {folder}"
            ) from exc
    vectorizer = CountVectorizer(**count_vectorizer_kwargs)
    try:
        counts = vectorizer.fit_transform(docs)
    except ValueError as exc:
        raise ValueError(
            f"{folder} ({len(files)} .txt files): CountVectorizer failed: {exc}"
        ) from exc
    data = scipy.sparse.csr_matrix(counts, dtype=np.int64)
    data.sort_indices()
    return Bunch(
        data=data,
        feature_names=vectorizer.get_feature_names_out(),
        filenames=np.array([str(f) for f in files]),
    )


def corpus_format(path: str | pathlib.Path) -> str:
    """The format of a corpus on disk, from its content (gzip or not).

    Parameters
    ----------
    path : str or path-like
        A folder, or a file.

    Returns
    -------
    {"folder", "mtx", "uci"}
        A folder of text files (:func:`load_text_folder`), a Matrix Market file
        (:func:`load_matrix_market`) or a UCI docword file (:func:`load_uci_bow`).

    Raises
    ------
    ValueError
        The path does not exist, cannot be read, or is none of these formats.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or directory")
    if path.is_dir():
        return "folder"
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        opener = gzip.open if magic == b"\x1f\x8b" else open
        with opener(path, "rb") as fh:
            head = fh.read(1 << 16)
    except (OSError, EOFError) as exc:
        raise ValueError(f"{path}: cannot read it ({exc})") from exc
    name = path.name.lower()
    if head[:14].lower() == b"%%matrixmarket" or name.endswith((".mtx", ".mtx.gz")):
        return "mtx"
    lines = head.split(b"\n", 3)[:3]
    if (len(lines) == 3 and all(line.strip().isdigit() for line in lines)) or \
            name.startswith("docword."):
        return "uci"
    raise ValueError(
        f"{path}: cannot tell its format: expected a UCI docword file (three header "
        "lines D, W, NNZ), a Matrix Market file (%%MatrixMarket banner), or a folder of "
        ".txt files")


def check_corpus_options(fmt: str, has_vocab: bool, folder_options: Iterable[str],
                         flag: Callable[[str], str] = str) -> None:
    """Raise ``ValueError`` if an option does not apply to a corpus of format ``fmt``.

    Parameters
    ----------
    fmt : {"nips", "folder", "mtx", "uci"}
        The corpus format (:func:`corpus_format`, or ``"nips"``).
    has_vocab : bool
        Whether a vocabulary file was given (docword and Matrix Market only).
    folder_options : iterable of str
        The names of the :class:`~sklearn.feature_extraction.text.CountVectorizer`
        options given (a folder of text files only).
    flag : callable, default=str
        How an option's name appears in the message (the CLI passes ``"--min-df"``
        for ``"min_df"``).
    """
    if has_vocab and fmt not in ("uci", "mtx"):
        raise ValueError(f"{flag('vocab')} applies to a docword or Matrix Market corpus "
                         "only, not to "
                         + ("the bundled NIPS corpus" if fmt == "nips" else
                            "a folder (its vocabulary is built by CountVectorizer)"))
    names = [flag(k) for k in sorted(folder_options)]
    if names and fmt != "folder":
        raise ValueError(f"{', '.join(names)} appl{'ies' if len(names) == 1 else 'y'} "
                         "to a folder of text files only")


def load_corpus(source: str | pathlib.Path, vocab: str | pathlib.Path | None = None,
                **count_vectorizer_kwargs) -> Bunch:
    """A document-word count matrix from the bundled corpus or any supported format.

    Parameters
    ----------
    source : str or path-like
        ``"nips"`` (the bundled corpus, :func:`load_nips`), a folder of UTF-8 ``.txt``
        files (:func:`load_text_folder`), a Matrix Market file
        (:func:`load_matrix_market`) or a UCI docword file (:func:`load_uci_bow`); the
        format is read from the content (:func:`corpus_format`).
    vocab : str or path-like, default=None
        The vocabulary of a Matrix Market or docword file, one word per line.
    **count_vectorizer_kwargs
        Passed to :func:`load_text_folder` (a folder only).

    Returns
    -------
    data : Bunch
        ``data`` (CSR counts, documents are rows), ``feature_names`` (or ``None``) and
        ``description`` (one line naming the source).

    Raises
    ------
    ValueError
        Naming the problem: an unknown or unreadable source, ``vocab`` for a source
        that has its own vocabulary, folder options for a file, or the loader's error.
    """
    fmt = "nips" if str(source) == "nips" else corpus_format(source)
    check_corpus_options(fmt, vocab is not None, count_vectorizer_kwargs)
    if fmt == "nips":
        bunch = load_nips()
        return Bunch(data=bunch.data, feature_names=bunch.feature_names,
                     description="NIPS corpus")
    path = pathlib.Path(source)
    if fmt == "folder":
        bunch = load_text_folder(path, **count_vectorizer_kwargs)
        return Bunch(data=bunch.data, feature_names=bunch.feature_names,
                     description=f"{path}/ ({bunch.data.shape[0]} text files)")
    if fmt == "mtx":
        bunch = load_matrix_market(path, vocab)
        return Bunch(data=bunch.data, feature_names=bunch.feature_names,
                     description=f"Matrix Market {path}")
    X, words = load_uci_bow(path, vocab)
    return Bunch(data=X, feature_names=words, description=f"UCI docword {path}")
