"""DPSVILatentDirichletAllocation against scikit-learn's LatentDirichletAllocation.

Each test runs both estimators on the same input and compares them directly: what
matches is asserted equal; what differs is asserted to differ exactly as the class
docstring's "Differences from scikit-learn" says.
"""

from __future__ import annotations

import copy
import inspect
import warnings

import joblib
import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import gammaln, psi
from sklearn.decomposition import LatentDirichletAllocation

from dask_dpsgd import DPSVILatentDirichletAllocation
from dask_dpsgd.engine._cluster import apply_n_jobs

LDA = DPSVILatentDirichletAllocation

# Parameters of ours that scikit-learn does not have (documented in the docstring).
EXTRA_PARAMS = ["n_workers", "threads_per_worker", "parallelism", "prefetch",
                "max_staleness", "warmup_updates", "checkpoint_path", "checkpoint_every"]


def _sk(**params):
    return LatentDirichletAllocation(learning_method="online", **params)


def _ours(**params):
    # One worker x one thread: the serial layout, fast on the shared test cluster.
    return LDA(n_workers=1, threads_per_worker=1, **params)


@pytest.fixture(scope="module")
def docs(nips):
    return nips[0][:120]


def _constraint(c):
    """A constraint as comparable data: an option set's str() follows the set's
    iteration order, which string hashing randomises per interpreter."""
    options = getattr(c, "options", None)
    return (type(c).__name__, frozenset(options)) if options is not None else str(c)


def test_parameter_intervals_are_sklearns():
    theirs = LatentDirichletAllocation._parameter_constraints
    ours = LDA._parameter_constraints
    for name, constraints in theirs.items():
        assert ([_constraint(c) for c in ours[name]]
                == [_constraint(c) for c in constraints]), name
    assert sorted(set(ours) - set(theirs)) == sorted(EXTRA_PARAMS)


def test_signatures_are_sklearns():
    sk_init = inspect.signature(LatentDirichletAllocation.__init__).parameters
    init = inspect.signature(LDA.__init__).parameters
    # scikit-learn's parameters first, in its order, of the same kind and default,
    # except learning_method (ours: "online"; "batch" is refused).
    assert list(init)[:len(sk_init)] == list(sk_init)
    assert list(init)[len(sk_init):] == EXTRA_PARAMS
    for name, p in sk_init.items():
        assert init[name].kind == p.kind, name
        if name == "learning_method":
            assert (p.default, init[name].default) == ("batch", "online")
        else:
            assert init[name].default == p.default, name
    public = {n for n in dir(LatentDirichletAllocation) if not n.startswith("_")}
    assert public == {n for n in dir(LDA) if not n.startswith("_")}
    for name in public:
        if callable(getattr(LatentDirichletAllocation, name)):
            assert (_arguments(getattr(LDA, name))
                    == _arguments(getattr(LatentDirichletAllocation, name))), name


def _arguments(method):
    """Name, kind and default of each argument but ``self`` (annotations name the
    class, which differs)."""
    return [(p.name, p.kind, p.default)
            for p in inspect.signature(method).parameters.values() if p.name != "self"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.int64])
def test_fitted_attributes_and_dtypes_are_sklearns(client, docs, dtype):
    """float32 in, float32 out (components_, exp_dirichlet_component_, transform),
    whatever the dtype given to transform afterwards; anything else, float64."""
    X = docs.astype(dtype)
    sk = _sk(n_components=3, max_iter=1, random_state=0).fit(X)
    ours = _ours(n_components=3, max_iter=1, random_state=0).fit(X)
    sk_attrs = {k for k in vars(sk) if k.endswith("_") and not k.startswith("_")}
    assert sk_attrs <= set(vars(ours))
    for name in sorted(sk_attrs):
        a, b = getattr(ours, name), getattr(sk, name)
        assert type(a) is type(b) or isinstance(a, type(b)), (name, type(a), type(b))
        if isinstance(b, np.ndarray):
            assert (a.dtype, a.shape) == (b.dtype, b.shape), name
    want = np.float32 if dtype == np.float32 else np.float64
    assert ours.components_.dtype == want
    for Xt in (docs.astype(np.float32), docs.astype(np.float64), docs.toarray()):
        assert ours.transform(Xt).dtype == sk.transform(Xt).dtype == want
        assert ours.transform(Xt, normalize=False).dtype == want
    assert ours.fit_transform(X).dtype == sk.fit_transform(X).dtype == want
    for method in ("score", "perplexity"):
        assert type(getattr(ours, method)(X)) is type(getattr(sk, method)(X)) \
            is np.float64


def test_float32_is_computed_in_float64_and_cast(client, docs):
    """Same initial float32 lambda as scikit-learn; transform is scikit-learn's float64
    arithmetic on that model, cast to float32 (scikit-learn's own float32 arithmetic
    differs from both by ~5e-4: its E-step stops on a float32 mean change)."""
    X32 = docs.astype(np.float32)
    sk = _sk(n_components=4, max_iter=0, random_state=7).fit(X32)
    ours = _ours(n_components=4, max_iter=0, random_state=7).fit(X32)
    np.testing.assert_array_equal(ours.components_, sk.components_)
    np.testing.assert_allclose(ours.exp_dirichlet_component_,
                               sk.exp_dirichlet_component_, rtol=1e-5)
    sk64 = copy.deepcopy(sk)
    sk64.components_ = sk.components_.astype(np.float64)
    sk64.exp_dirichlet_component_ = np.exp(
        psi(sk64.components_) - psi(sk64.components_.sum(axis=1, keepdims=True)))
    doc_topic = ours.transform(X32)
    np.testing.assert_allclose(doc_topic, sk64.transform(docs), rtol=0, atol=1e-6)
    np.testing.assert_allclose(doc_topic, sk.transform(X32), rtol=0, atol=2e-3)
    # A float32 model stays float32 through partial_fit with float64 data.
    ours = _ours(n_components=3, random_state=0, total_samples=500)
    ours.partial_fit(X32[:60])
    ours.partial_fit(docs[60:].astype(np.float64))
    sk = _sk(n_components=3, random_state=0, total_samples=500)
    sk.partial_fit(X32[:60])
    sk.partial_fit(docs[60:].astype(np.float64))
    assert ours.components_.dtype == sk.components_.dtype == np.float32
    assert np.isfinite(ours.components_).all()


def _topic_word_term(lam, eta):
    """scikit-learn's E[log p(beta | eta) - log q(beta | lambda)] (scipy)."""
    elog = psi(lam) - psi(lam.sum(axis=1))[:, None]
    return (np.sum((eta - lam) * elog) + np.sum(gammaln(lam) - gammaln(eta))
            + np.sum(gammaln(eta * lam.shape[1]) - gammaln(lam.sum(axis=1))))


@pytest.mark.parametrize(
    "params",
    [{"doc_topic_prior": 0.0}, {"topic_word_prior": 0.0},
     {"doc_topic_prior": 0.0, "topic_word_prior": 0.0}, {"learning_decay": 0.0},
     {"learning_decay": 0.0, "topic_word_prior": 0.0},
     {"doc_topic_prior": 1.0, "topic_word_prior": 1.0, "learning_decay": 1.0}])
def test_closed_intervals_work_end_to_end_as_in_sklearn(client, docs, params):
    """The ends of scikit-learn's closed intervals are accepted and fit as there:
    finite topics and document-topic distributions; the bound is finite exactly where
    scikit-learn's is (a zero prior is improper: NaN, with a warning here)."""
    common = dict(n_components=4, max_iter=2, batch_size=32, random_state=0, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scikit-learn's NaN arithmetic
        sk = _sk(**common).fit(docs)
        sk_score = sk.score(docs)
    improper = params.get("doc_topic_prior") == 0 or params.get("topic_word_prior") == 0
    if improper:
        with pytest.warns(RuntimeWarning, match="bound_ is NaN.*improper"):
            ours = _ours(**common).fit(docs)
        with pytest.warns(RuntimeWarning, match="score is NaN"):
            score = ours.score(docs)
        with pytest.warns(RuntimeWarning, match="perplexity is NaN"):
            perplexity = ours.perplexity(docs)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            ours = _ours(**common).fit(docs)
            score, perplexity = ours.score(docs), ours.perplexity(docs)
    assert np.isnan(score) == np.isnan(sk_score) == improper
    assert np.isnan(perplexity) == np.isnan(ours.bound_) == np.isnan(sk.bound_) \
        == improper
    for est in (ours, sk):
        assert np.isfinite(est.components_).all() and (est.components_ >= 0).all()
        doc_topic = est.transform(docs)
        assert np.isfinite(doc_topic).all()
        np.testing.assert_allclose(doc_topic.sum(axis=1), 1.0)
    # The minibatch bound has no topic-word term: finite unless doc_topic_prior = 0,
    # or a word has probability 0 (topic_word_prior = 0 and learning_decay = 0: each
    # update keeps only its minibatch's words).
    bounds = [r["train/minibatch_bound_per_word"] for r in ours.history_]
    assert len(bounds) == 2
    zero_words = params.get("topic_word_prior") == 0 and params.get("learning_decay") == 0
    assert np.isfinite(bounds).all() != (params.get("doc_topic_prior") == 0 or zero_words)
    if not improper:
        # ... and it is the documents part of the bound per token: at the end of the
        # fit it is near the final model's (computed with scipy from score).
        doc_part = (score - _topic_word_term(ours.components_, ours.topic_word_prior_))
        # (Measured: within 1.2-1.7%; the last pass's minibatches are scored with
        # the parameters of their time and random initial gamma.)
        assert bounds[-1] == pytest.approx(doc_part / docs.sum(), rel=0.05)


def test_zero_priors_give_sklearns_topics_given_its_draws(docs, monkeypatch):
    """With scikit-learn's random draws (one in-process worker), a fit with zero priors
    and zero decay gives scikit-learn's topics: psi(0) = -inf drops a topic or word
    as scikit-learn's C code does."""
    distributed = pytest.importorskip("distributed")
    from sklearn.utils import check_random_state

    from dask_dpsgd._kernels import lda as lda_kernels

    common = dict(n_components=4, max_iter=2, batch_size=32, random_state=0,
                  doc_topic_prior=0.0, topic_word_prior=0.0, learning_decay=0.0)
    rs = check_random_state(0)
    rs.gamma(100.0, 0.01, (4, docs.shape[1]))  # scikit-learn draws lambda first
    monkeypatch.setattr(lda_kernels, "init_gamma",
                        lambda rng, n, k: rs.gamma(100.0, 0.01, (n, k)))
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster, set_as_default=False) as c, c.as_current(), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ours = _ours(**common).fit(docs)
        sk = _sk(**common).fit(docs)
    # Near underflow (1e-90 against 1e-90 * (1 + 1e-3), 1e-320 against 0) rounding
    # decides; elsewhere they agree.
    big = sk.components_ > 1e-10
    assert big.sum() > 100 and (sk.components_ == 0).any()
    np.testing.assert_allclose(ours.components_[big], sk.components_[big], rtol=1e-4)
    assert np.median(np.abs(ours.components_[big] / sk.components_[big] - 1)) < 1e-7
    assert (ours.components_[~big] <= 1e-10).all()
    np.testing.assert_allclose(ours.transform(docs), sk.transform(docs), atol=1e-6)


def test_feature_names_out_are_sklearns(client, docs):
    pd = pytest.importorskip("pandas")
    sk = _sk(n_components=3, max_iter=1, random_state=0).fit(docs)
    ours = _ours(n_components=3, max_iter=1, random_state=0).fit(docs)
    names = ours.get_feature_names_out()
    np.testing.assert_array_equal(names, sk.get_feature_names_out())
    assert list(names) == ["latentdirichletallocation0", "latentdirichletallocation1",
                           "latentdirichletallocation2"]
    assert names.dtype == object
    # pandas output is keyed on them; input_features is checked as scikit-learn does.
    frame = pd.DataFrame(docs[:20].toarray(),
                         columns=[f"w{i}" for i in range(docs.shape[1])])
    out_sk = _sk(n_components=3, max_iter=1, random_state=0).set_output(
        transform="pandas").fit(frame).transform(frame)
    out = _ours(n_components=3, max_iter=1, random_state=0).set_output(
        transform="pandas").fit(frame).transform(frame)
    assert list(out.columns) == list(out_sk.columns) == list(names)
    for est in (sk, ours):
        with pytest.raises(ValueError, match="input_features"):
            est.get_feature_names_out(["a", "b"])


@pytest.mark.parametrize("n_jobs", [None, -1, -2, -3, 1, 2, 5])
def test_n_jobs_follows_joblibs_arithmetic(client, docs, n_jobs):
    """Per worker, with n_cpus = its thread budget (2: the session cluster's
    NUMBA_NUM_THREADS): joblib's n_cpus + 1 + n_jobs for negative values, at least 1."""
    ours = LDA(n_components=2, max_iter=0, n_workers=1, n_jobs=n_jobs).fit(docs)
    expected = {None: 2, -1: 2, -2: 1, -3: 1, 1: 1, 2: 2, 5: 2}[n_jobs]
    assert ours.threads_per_worker_ == [expected]
    # scikit-learn accepts the same values (not fitted: n_jobs=5 would start 5
    # processes on the test machine's 2 cores).
    _sk(n_components=2, n_jobs=n_jobs)._validate_params()


def test_n_jobs_arithmetic_is_joblibs():
    n_cpus = joblib.cpu_count()
    for n_jobs in range(-n_cpus - 3, 0):
        assert apply_n_jobs(n_cpus, n_jobs) == joblib.effective_n_jobs(n_jobs), n_jobs
    for n_jobs in range(1, n_cpus + 1):
        assert apply_n_jobs(n_cpus, n_jobs) == joblib.effective_n_jobs(n_jobs), n_jobs
    assert apply_n_jobs(n_cpus, None) == n_cpus
    # A positive value above the budget does not oversubscribe (a documented
    # difference: joblib would start that many jobs).
    assert apply_n_jobs(n_cpus, n_cpus + 4) == n_cpus


def test_n_jobs_zero_is_an_error_in_both(client, docs):
    with pytest.raises(ValueError, match="n_jobs == 0"):
        _sk(n_components=2, max_iter=1, n_jobs=0).fit(docs)
    with pytest.raises(ValueError, match="n_jobs=0 has no meaning"):
        _ours(n_components=2, max_iter=1, n_jobs=0).fit(docs)


def test_threads_per_worker_takes_precedence_over_n_jobs(client, docs):
    ours = LDA(n_components=2, max_iter=0, n_workers=1, threads_per_worker=2,
               n_jobs=-2).fit(docs)
    assert ours.threads_per_worker_ == [2]


def test_n_iter_counts_the_pass_that_stops_early(client, docs):
    """Documented difference: scikit-learn does not count the pass whose evaluation
    stopped the fit."""
    common = dict(n_components=3, max_iter=20, evaluate_every=1, perp_tol=1e9,
                  random_state=0)
    sk = _sk(**common).fit(docs)
    ours = _ours(**common).fit(docs)
    assert sk.n_iter_ == 1
    assert ours.n_iter_ == 2 == len(ours.history_)


def test_perplexity_checks_the_feature_count(client, docs):
    """Documented difference: scikit-learn's perplexity resets n_features_in_ to the
    new data's (so a later transform of the training data fails); ours refuses."""
    sk = _sk(n_components=2, max_iter=1, random_state=0).fit(docs)
    ours = _ours(n_components=2, max_iter=1, random_state=0).fit(docs)
    narrow = docs[:, :50]
    sk.perplexity(narrow)
    assert sk.n_features_in_ == 50
    with pytest.raises(ValueError, match="features"):
        ours.perplexity(narrow)
    assert ours.n_features_in_ == docs.shape[1]


def test_all_zero_training_data_is_refused(client):
    """Documented difference: scikit-learn fits it and reports an infinite bound_."""
    X = sp.csr_matrix((6, 5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.isinf(_sk(n_components=2, max_iter=1).fit(X).bound_)
    with pytest.raises(ValueError, match="no positive count"):
        _ours(n_components=2, max_iter=1).fit(X)


def test_batch_learning_is_refused(client, docs):
    """Documented difference: only online VB is distributed."""
    _sk(n_components=2, max_iter=1).set_params(learning_method="batch").fit(docs)
    with pytest.raises(ValueError, match="learning_method='batch' is not supported"):
        _ours(n_components=2, max_iter=1, learning_method="batch").fit(docs)
