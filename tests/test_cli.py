"""``python -m dask_dpsgd``: corpora, cluster choice, model and plot outputs.

The jobs run as a user runs them (subprocesses, tiny corpora written to tmp_path, one
pass, three topics); argument errors are checked in-process through ``main``.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse

from dask_dpsgd.__main__ import _split, main
from dask_dpsgd.datasets import load_nips
from dask_dpsgd.io import load_model

TINY = ["--max-iter", "1", "--n-components", "3", "--verbose", "0"]

# Three themes, in NIPS words, for a folder of small "papers".
THEMES = [
    ["neuron", "synaptic", "cortex", "spike", "dendritic", "membrane", "firing",
     "cortical", "neuronal", "axon"],
    ["kernel", "margin", "classifier", "hyperplane", "regularization", "svm",
     "vector", "support", "feature", "dual"],
    ["speech", "phoneme", "acoustic", "speaker", "hmm", "utterance", "recognition",
     "word", "vocabulary", "spoken"],
]
FILLER = ["the", "of", "and", "we", "is", "in", "this", "to", "a", "that"]


# --------------------------------------------------------------------------- #
# Helpers
# --------------------------------------------------------------------------- #
def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None,
         ok: bool = True, timeout: int = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dask_dpsgd", *args],
                          capture_output=True, text=True, timeout=timeout,
                          check=False, cwd=cwd, env=env)
    if ok:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def small_counts() -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """40 NIPS papers restricted to the words they use."""
    bunch = load_nips()
    X = bunch.data[:40]
    used = np.flatnonzero(np.asarray(X.sum(axis=0)).ravel())
    return X[:, used].tocsr(), bunch.feature_names[used]


def _write_docword(folder: Path, X, words) -> tuple[Path, Path]:
    coo = X.tocoo()
    lines = [str(X.shape[0]), str(X.shape[1]), str(coo.nnz)]
    lines += [f"{r + 1} {c + 1} {v}" for r, c, v in zip(coo.row, coo.col, coo.data,
                                                           strict=True)]
    docword = folder / "docword.tiny.txt"
    docword.write_text("\n".join(lines) + "\n")
    vocab = folder / "vocab.tiny.txt"
    vocab.write_text("\n".join(words) + "\n")
    return docword, vocab


def _write_papers(folder: Path, n: int = 20) -> list[str]:
    """``n`` short texts, each mostly about one theme; returns the theme words."""
    vocab = set(load_nips().feature_names.tolist())
    themes = [[w for w in theme if w in vocab] for theme in THEMES]
    assert all(len(t) >= 8 for t in themes)
    rng = np.random.default_rng(0)
    folder.mkdir()
    for i in range(n):
        main_theme, other = themes[i % 3], themes[(i + 1) % 3]
        sentences = []
        for _ in range(8):
            words = list(rng.choice(main_theme, 5)) + list(rng.choice(other, 1))
            words += list(rng.choice(FILLER, 4))
            rng.shuffle(words)
            sentences.append(" ".join(words).capitalize() + ".")
        (folder / f"paper_{i:02d}.txt").write_text(
            f"Paper {i}: a naïve study.\n" + " ".join(sentences) + "\n",
            encoding="utf-8")
    return sorted({w for t in themes for w in t} | {"paper", "naïve", "study"})


# --------------------------------------------------------------------------- #
# Corpora
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_lda_on_a_docword_file_saves_a_model_that_reproduces_the_run(
        tmp_path, small_counts):
    X, words = small_counts
    docword, vocab = _write_docword(tmp_path, X, words)
    proc = _run(["lda", "--corpus", str(docword), "--vocab", str(vocab), *TINY,
                 "--random-state", "3", "--output", "out.json",
                 "--save-model", "lda.npz"], tmp_path)
    assert "UCI docword" in proc.stdout
    assert "36 training / 4 held-out documents" in proc.stdout
    assert "model: lda.npz" in proc.stdout
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["corpus"] == {"source": str(docword), "n_documents": 40,
                             "n_words": X.shape[1], "n_train": 36, "n_test": 4}
    assert len(out["topics"]) == 3
    assert all(w in set(words) for topic in out["topics"] for w in topic)
    # The held-out rows are the documented seeded permutation's first ceil(0.1 * n).
    test_rows = np.random.RandomState(3).permutation(40)[:4]
    lda = load_model(tmp_path / "lda.npz")
    assert lda.n_components == 3
    assert lda.random_state == 3
    assert lda.perplexity(X[test_rows].astype(np.float64)) == pytest.approx(
        out["perplexity"], rel=1e-12)


@pytest.mark.slow
def test_lda_on_a_matrix_market_file_without_vocab_or_held_out_set(
        tmp_path, small_counts):
    X, _ = small_counts
    scipy.io.mmwrite(tmp_path / "counts.mtx", X)
    proc = _run(["lda", "--corpus", "counts.mtx", "--test-size", "0", *TINY,
                 "--output", "out.json"], tmp_path)
    assert "Matrix Market counts.mtx: 40 training / 0 held-out" in proc.stdout
    assert "held-out perplexity" not in proc.stdout
    assert "training bound_ (perplexity)" in proc.stdout
    out = json.loads((tmp_path / "out.json").read_text())
    assert out["perplexity"] is None
    assert out["bound"] > 1
    # No vocabulary: words are shown as column numbers.
    assert all(w.startswith("#") for topic in out["topics"] for w in topic)


@pytest.mark.slow
def test_lda_on_a_folder_of_text_files_with_the_heat_map(tmp_path):
    theme_words = _write_papers(tmp_path / "papers")
    proc = _run(["lda", "--corpus", "papers", *TINY, "--top-words", "5",
                 "--plot", "topics.png", "--output", "out.json"], tmp_path)
    assert "papers/ (20 text files): 18 training / 2 held-out" in proc.stdout
    assert "plot: topics.png (documents/s per pass; topic-word heat map" in proc.stdout
    assert (tmp_path / "topics.png").stat().st_size > 5000
    out = json.loads((tmp_path / "out.json").read_text())
    top = {w for topic in out["topics"] for w in topic}
    # Stop words are gone (english list), every top word is a word of the texts.
    assert top <= set(theme_words), top - set(theme_words)
    assert not top & set(FILLER)
    assert 1 < out["perplexity"] < 1e4


@pytest.mark.slow
def test_lda_plot_shows_the_training_perplexity_when_evaluated(tmp_path):
    _write_papers(tmp_path / "papers")
    proc = _run(["lda", "--corpus", "papers", "--max-iter", "2", "--n-components", "3",
                 "--verbose", "0", "--evaluate-every", "1", "--stop-words", "none",
                 "--min-df", "1", "--max-df", "1.0", "--plot", "perp.png",
                 "--output", "out.json"],
                tmp_path)
    assert "plot: perp.png (documents/s per pass; training perplexity)" in proc.stdout
    assert (tmp_path / "perp.png").stat().st_size > 5000
    out = json.loads((tmp_path / "out.json").read_text())
    assert [r["pass"] for r in out["history"]] == [1, 2]
    assert all(r["train/perplexity"] > 1 for r in out["history"])
    # No stop-word list, --min-df 1 and --max-df 1.0: every token of the texts is a
    # word (CountVectorizer's default tokens: two or more word characters).
    assert out["config"]["stop_words"] == "none"
    assert out["config"]["min_df"] == 1
    tokens = set()
    for path in (tmp_path / "papers").glob("*.txt"):
        tokens |= set(re.findall(r"\b\w\w+\b", path.read_text("utf-8").lower()))
    assert {"the", "of", "naïve", "paper"} <= tokens
    assert out["corpus"]["n_words"] == len(tokens)


@pytest.mark.slow
def test_lda_names_the_text_file_that_is_not_utf8(tmp_path):
    _write_papers(tmp_path / "papers")
    (tmp_path / "papers" / "old.txt").write_bytes("résumé".encode("latin-1"))
    proc = _run(["lda", "--corpus", "papers", *TINY], tmp_path, ok=False)
    assert proc.returncode == 1
    assert "old.txt: not valid UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--corpus", "notes.txt"], "cannot tell its format"),
        (["--corpus", "missing"], "no such file or directory"),
        (["--corpus", "papers", "--vocab", "v.txt"], "--vocab applies to a docword"),
        (["--corpus", "notes.txt", "--min-df", "5"], "cannot tell its format"),
        (["--corpus", "c.mtx", "--min-df", "5"], "--min-df applies to a folder"),
        (["--corpus", "c.mtx", "--vocab", "v.txt"], "vocabulary has 2 entries but"),
    ],
)
def test_lda_corpus_errors_are_one_line_messages(tmp_path, extra, message):
    (tmp_path / "papers").mkdir()
    (tmp_path / "papers" / "a.txt").write_text("words")
    (tmp_path / "notes.txt").write_text("just some notes\n")
    (tmp_path / "v.txt").write_text("a\nb\n")
    scipy.io.mmwrite(tmp_path / "c.mtx", scipy.sparse.csr_matrix(np.eye(3, dtype=int)))
    proc = _run(["lda", *extra, *TINY], tmp_path, ok=False)
    assert proc.returncode == 1
    assert message in proc.stderr
    assert proc.stderr.startswith("python -m dask_dpsgd lda: error: --")
    assert "Traceback" not in proc.stderr


def test_corpus_files_are_recognised_by_content(tmp_path):
    import gzip

    from dask_dpsgd.datasets import corpus_format

    mtx = "%%MatrixMarket matrix coordinate integer general\n1 1 1\n1 1 1\n"
    (tmp_path / "counts.bin").write_bytes(gzip.compress(mtx.encode()))
    (tmp_path / "docword.gz").write_bytes(gzip.compress(b"1\n1\n1\n1 1 1\n"))
    (tmp_path / "bow").write_text(" 2\n3 \n0\n")
    (tmp_path / "empty.mtx").write_text("")
    (tmp_path / "notes").write_text("1\n2\nthree\n")
    assert corpus_format(tmp_path / "counts.bin") == "mtx"
    assert corpus_format(tmp_path / "docword.gz") == "uci"
    assert corpus_format(tmp_path / "bow") == "uci"
    assert corpus_format(tmp_path / "empty.mtx") == "mtx"  # mmread names the problem
    assert corpus_format(tmp_path) == "folder"
    with pytest.raises(ValueError, match="notes: cannot tell its format"):
        corpus_format(tmp_path / "notes")
    with pytest.raises(ValueError, match="gone: no such file or directory"):
        corpus_format(tmp_path / "gone")


def test_default_split_is_the_bundled_nips_split():
    nips = load_nips()
    train, test = _split(1500, 0.1, 0)
    np.testing.assert_array_equal(train, nips.train_indices)
    np.testing.assert_array_equal(test, nips.test_indices)
    train, test = _split(7, 0.0, 0)
    assert test.size == 0
    assert train.tolist() == list(range(7))
    train, test = _split(20, 0.1, 5)
    assert len(test) == 2 == math.ceil(0.1 * 20)
    assert sorted([*train, *test]) == list(range(20))


# --------------------------------------------------------------------------- #
# Cluster choice
# --------------------------------------------------------------------------- #
def _fake_jobqueue(root: Path, body: str) -> dict[str, str]:
    """Environment whose ``import dask_jobqueue`` finds ``body``."""
    pkg = root / "fake" / "dask_jobqueue"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent(body))
    path = os.pathsep.join([str(root / "fake"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path}


FAKE_SLURM = """
    import json, os

    from distributed import LocalCluster

    def _log(event, **kw):
        with open(os.environ["FAKE_SLURM_LOG"], "a") as fh:
            fh.write(json.dumps({"event": event, **kw}) + "\\n")

    class SLURMCluster(LocalCluster):
        # Records what the CLI asks of SLURM, then runs the jobs' workers locally.
        def __init__(self, **kwargs):
            _log("init", **kwargs)
            super().__init__(n_workers=0, threads_per_worker=kwargs["cores"],
                             processes=True, host="127.0.0.1", dashboard_address=None,
                             env={"NUMBA_NUM_THREADS": str(kwargs["job_cpu"])})

        def scale(self, n=None, jobs=0, memory=None, cores=None):
            _log("scale", n=n, jobs=jobs)
            return super().scale(jobs or n or 0)

        def close(self, *args, **kwargs):
            _log("close")
            return super().close(*args, **kwargs)
"""


@pytest.mark.slow
def test_slurm_jobs_build_the_documented_slurm_cluster(tmp_path, small_counts):
    X, words = small_counts
    docword, vocab = _write_docword(tmp_path, X, words)
    env = _fake_jobqueue(tmp_path, FAKE_SLURM)
    env["FAKE_SLURM_LOG"] = str(tmp_path / "slurm.log")
    proc = _run(["lda", "--corpus", str(docword), "--vocab", str(vocab), *TINY,
                 "--slurm-jobs", "2", "--slurm-cores", "1", "--slurm-memory", "3GB",
                 "--slurm-walltime", "00:20:00", "--slurm-queue", "short"],
                tmp_path, env=env)
    assert "waiting for 2 SLURM job(s)" in proc.stdout
    assert "on 2 worker(s) x [1, 1] numba thread(s)" in proc.stdout
    assert "held-out perplexity" in proc.stdout
    events = [json.loads(line) for line in (tmp_path / "slurm.log").read_text()
              .splitlines()]
    assert events[0] == {"event": "init", "cores": 1, "processes": 1, "job_cpu": 1,
                         "memory": "3GB", "walltime": "00:20:00", "queue": "short",
                         "job_script_prologue": ["export NUMBA_NUM_THREADS=1"]}
    assert {"event": "scale", "n": None, "jobs": 2} in events
    assert {"event": "close"} in events  # the jobs are cancelled at the end


@pytest.mark.slow
@pytest.mark.parametrize("command", ["lda", "a2c"])
def test_slurm_without_dask_jobqueue_says_how_to_install_it(tmp_path, command):
    env = _fake_jobqueue(tmp_path, """
        raise ModuleNotFoundError("No module named 'dask_jobqueue'",
                                  name="dask_jobqueue")
    """)
    # The check comes first: before the (here missing) corpus is read.
    extra = ["--corpus", "missing.mtx"] if command == "lda" else []
    proc = _run([command, "--slurm-jobs", "2", *extra], tmp_path, env=env, ok=False)
    assert proc.returncode == 1
    assert "--slurm-jobs needs dask-jobqueue" in proc.stderr
    assert "pip install dask-jobqueue" in proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- #
# a2c outputs
# --------------------------------------------------------------------------- #
@pytest.mark.slow
def test_a2c_saves_an_agent_that_scores_the_same(tmp_path):
    _run(["a2c", "--total-timesteps", "1000", "--n-eval-episodes", "3", "--verbose",
          "0", "--save-model", "agent.npz", "--output", "a2c.json"], tmp_path)
    out = json.loads((tmp_path / "a2c.json").read_text())
    assert out["model"] == "agent.npz"
    agent = load_model(tmp_path / "agent.npz")
    assert agent.env == "CartPole-v1"
    assert agent.total_timesteps == 1000
    assert agent.score(n_episodes=3, random_state=0) == out["eval_return"]
    assert (tmp_path / "hsa2c_learning_curve.png").stat().st_size > 1000


# --------------------------------------------------------------------------- #
# Argument checks (in-process: they stop before any work)
# --------------------------------------------------------------------------- #
def _exit(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


def test_help_lists_the_new_flags_in_groups(capsys):
    code, out, _ = _exit(["lda", "--help"], capsys)
    assert code == 0
    for flag in ("--corpus", "--vocab", "--test-size", "--max-df", "--min-df",
                 "--stop-words {english,none}", "--evaluate-every", "--slurm-jobs",
                 "--slurm-cores", "--slurm-memory", "--slurm-walltime",
                 "--slurm-queue", "--save-model", "--plot"):
        assert flag in out
    assert out.index("corpus (default: the bundled NIPS papers):") < out.index(
        "\n  --corpus CORPUS ")
    assert "cluster (default: an embedded LocalCluster" in out
    code, out, _ = _exit(["a2c", "--help"], capsys)
    assert code == 0
    assert "--save-model" in out
    assert "--slurm-jobs" in out
    assert "--corpus" not in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["lda", "--scheduler-address", "tcp://127.0.0.1:1", "--slurm-jobs", "2"],
         "argument --slurm-jobs: not allowed with argument --scheduler-address"),
        (["a2c", "--slurm-jobs", "2", "--scheduler-address", "tcp://127.0.0.1:1"],
         "not allowed with argument"),
        (["lda", "--slurm-cores", "8"], "--slurm-cores only applies with --slurm-jobs"),
        (["a2c", "--slurm-memory", "1GB", "--slurm-queue", "q"],
         "--slurm-memory, --slurm-queue only apply with --slurm-jobs"),
        (["lda", "--slurm-jobs", "0"], "--slurm-jobs must be >= 1"),
        (["lda", "--test-size", "1"], "--test-size must be in [0, 1), got 1.0"),
        (["lda", "--test-size", "-0.1"], "--test-size must be in [0, 1)"),
        (["lda", "--vocab", "v.txt"], "not to the bundled NIPS corpus"),
        (["lda", "--stop-words", "french"], "invalid choice: 'french'"),
        (["lda", "--max-df", "lots"], "invalid int or float value: 'lots'"),
    ],
)
def test_argument_errors(capsys, argv, message):
    code, _, err = _exit(argv, capsys)
    assert code == 2
    assert message in err


def test_df_options_keep_count_vectorizer_semantics():

    from dask_dpsgd.__main__ import build_parsers

    parser = build_parsers()[1]["lda"]
    ns = parser.parse_args(["--min-df", "3", "--max-df", "0.5"])
    assert ns.min_df == 3
    assert isinstance(ns.min_df, int)
    assert ns.max_df == 0.5
    assert isinstance(ns.max_df, float)
    ns = parser.parse_args([])
    assert (ns.corpus, ns.test_size, ns.slurm_jobs) == ("nips", 0.1, None)
