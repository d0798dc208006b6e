"""``DPSVILatentDirichletAllocation``: scikit-learn's online LDA, trained by DPSGD."""

from __future__ import annotations

import os
import warnings
from numbers import Integral, Real
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import (
    _check_feature_names_in,
    check_is_fitted,
    check_non_negative,
    validate_data,
)

from dask_dpsgd import engine
from dask_dpsgd._kernels import lda as lda_kernels
from dask_dpsgd._server.state import resolve_max_staleness
from dask_dpsgd._utils._checkpoint import (
    check_fingerprint,
    checkpoint_root_seed,
    load_checkpoint,
    save_checkpoint,
)
from dask_dpsgd._utils._report import record_layout, record_server
from dask_dpsgd._utils._validation import (
    PARALLELISM,
    check_counts,
    check_counts_finite_nonneg,
)
from dask_dpsgd.decomposition._svi import BOUND_KEY, SVIAlgorithm, SVIConfig
from dask_dpsgd.engine._arrays import is_dask_array, map_row_blocks
from dask_dpsgd.engine._live import live_page_banner
from dask_dpsgd.exceptions import _warn_stale_updates


def _transform_block(X: Any, exp_beta_wm: np.ndarray, alpha: float, max_iter: int,
                     tol: float, result_dtype: Any = np.float64) -> np.ndarray:
    """Unnormalised ``gamma`` of a block of documents (scikit-learn's transform E-step).

    Also the function applied to each row chunk of a Dask array, so it validates the
    counts itself (on the worker holding the chunk). Computed in float64, returned as
    ``result_dtype`` (the model's: scikit-learn's transform output follows
    ``components_``).
    """
    X = sp.csr_matrix(X, dtype=np.float64, copy=True)  # never touch the caller's data
    if X.nnz:
        check_counts_finite_nonneg(X, "DPSVILatentDirichletAllocation.transform")
    X.sum_duplicates()
    gamma = np.ones((X.shape[0], exp_beta_wm.shape[1]))
    if X.shape[0]:
        lda_kernels.run_estep(X.indptr.astype(np.int64), X.indices.astype(np.int64),
                              X.data, exp_beta_wm, gamma, alpha, max_iter, tol, False,
                              True)
    return gamma.astype(result_dtype, copy=False)


def _warn_undefined_bound(est: Any, what: str, stacklevel: int) -> None:
    """Warn that the variational bound is NaN because a prior is 0 (improper)."""
    zero = [name for name in ("doc_topic_prior_", "topic_word_prior_")
            if getattr(est, name) == 0]
    if zero:
        warnings.warn(
            f"{what} is NaN: with {' and '.join(n.rstrip('_') + '=0' for n in zero)} the "
            "Dirichlet prior is improper and the variational bound undefined (as in "
            "scikit-learn); the topics and transform are not affected",
            RuntimeWarning, stacklevel=stacklevel + 1)


class DPSVILatentDirichletAllocation(ClassNamePrefixFeaturesOutMixin, TransformerMixin,
                                     BaseEstimator):
    """Latent Dirichlet Allocation by distributed/parallel stochastic VI (DPSVI).

    A drop-in for :class:`sklearn.decomposition.LatentDirichletAllocation` with
    ``learning_method="online"``: the same parameters, methods and fitted attributes,
    trained by DPSGD (Mohamad, Alamri & Bouchachia, 2022). Each Dask worker holds a shard
    of the documents and runs the E-step of its minibatches over its cores with numba;
    it pushes the minibatch's sparse sufficient statistics to a parameter server (a Dask
    Actor) without waiting for the other workers; the server applies the online
    variational Bayes step (Hoffman et al., 2010) in arrival order and measures each
    update's staleness.

    The fit runs on the current default Dask client (``with Client(...):``, a
    dask-jobqueue ``SLURMCluster``'s client, ...); without one it starts an embedded
    ``LocalCluster`` on 127.0.0.1 sized to the machine and closes it afterwards.

    Parameters
    ----------
    n_components : int, default=10
        Number of topics ``K``.
    doc_topic_prior : float in [0, 1], default=None
        ``alpha``, the prior of the document-topic distribution ``theta``; ``None``
        means ``1 / n_components``. With 0 the Dirichlet prior is improper: the fit and
        :meth:`transform` work, but the variational bound (``score``, ``perplexity``,
        ``bound_``, ``train/perplexity``, ``train/minibatch_bound_per_word``) is
        undefined and NaN, as in scikit-learn (with a warning).
    topic_word_prior : float in [0, 1], default=None
        ``eta``, the prior of the topic-word distribution ``beta``; ``None`` means
        ``1 / n_components``. With 0, as ``doc_topic_prior``, but the minibatch bound
        (no topic-word term) stays finite, unless ``learning_decay=0`` too: each update
        then keeps only its minibatch's words, and a word of probability 0 makes it
        ``-inf`` (NaN in later differences).
    learning_method : {"online"}, default="online"
        Only online (stochastic) variational Bayes is distributed; scikit-learn's
        ``"batch"`` is refused with an explanation.
    learning_decay : float in [0, 1], default=0.7
        ``kappa`` in ``rho_t = (learning_offset + t) ** -kappa``; (0.5, 1] guarantees
        asymptotic convergence. 0 gives ``rho_t = 1`` (each update replaces ``lambda``
        by its minibatch's estimate): with one worker and ``batch_size >= n_samples``,
        scikit-learn's batch update.
    learning_offset : float, default=10.0
        ``tau_0``, down-weights early iterations.
    max_iter : int, default=10
        Passes over the training data in :meth:`fit`.
    batch_size : int, default=128
        Documents per minibatch ``|B|`` (per push).
    evaluate_every : int, default=-1
        Evaluate the training perplexity every this many passes (<= 0: never); stop
        when it changes by less than ``perp_tol``.
    total_samples : int, default=1e6
        ``D`` used by :meth:`partial_fit` (``fit`` uses the number of documents).
    perp_tol : float, default=1e-1
        Perplexity tolerance for ``evaluate_every``.
    mean_change_tol : float, default=1e-3
        E-step stopping tolerance on the mean change of ``gamma_d``.
    max_doc_update_iter : int, default=100
        Maximum E-step iterations per document.
    n_jobs : int, default=None
        scikit-learn's parallelism knob, with joblib's arithmetic, applied to the numba
        threads of each worker whose threads are budgeted automatically
        (``threads_per_worker=None``; an explicit ``threads_per_worker`` takes
        precedence). With ``n_cpus`` the threads a worker would get without it (its
        share of its host's cores, or its ``NUMBA_NUM_THREADS``): ``None`` uses
        ``n_cpus``; a positive value caps it (``min(n_jobs, n_cpus)``); a negative value
        uses ``n_cpus + 1 + n_jobs`` threads, at least 1, as ``joblib.effective_n_jobs``
        does (``-1``: all ``n_cpus``; ``-2``: all but one). ``0`` is an error, as in
        scikit-learn.
    verbose : int, default=0
        0: silent. 1: a progress bar over passes with docs/s, staleness, the minibatch
        per-word bound and perplexity (when evaluated), and the links of the Dask
        dashboard and of the live training metrics page (see
        ``live_metrics_url_``).
    random_state : int, RandomState instance or None, default=None
        Seeds the initial ``lambda`` (drawn exactly as scikit-learn draws it) and every
        worker's random stream.
    n_workers : int, default=None
        Dask workers to train on (``None``: all workers of the client; embedded: sized
        from the machine's cores, see Notes).
    threads_per_worker : int, default=None
        Numba threads (cores) per worker for the E-step (``None``: each worker's cores
        shared among the workers of this fit on the same host, or its
        ``NUMBA_NUM_THREADS`` if set).
    parallelism : {"auto", "serial", "hogwild", "parameter-server", "dpsgd"}, \
default="auto"
        The engine's mode: ``"serial"`` (1 worker x 1 core), ``"hogwild"`` (lock-free
        cores only: 1 worker x all its cores), ``"parameter-server"`` (asynchronous
        workers only: all workers x 1 core), ``"dpsgd"`` (both: several workers x
        several cores). ``"auto"``: ``n_workers`` / ``threads_per_worker`` as given and
        the rest sized to the cluster, which is DPSGD wherever the cluster has room for
        it (embedded cluster: ``P`` = the divisor of the core count ``C`` nearest
        ``C^(1/3)`` cores per worker, ``C / P`` workers, after the paper's bounds
        cores <= T^(1/4), workers <= T^(1/2); 2 cores: 2 workers x 1). A mode the cluster
        cannot give, or that contradicts ``n_workers`` / ``threads_per_worker``, is an
        error. The mode run is in ``parallelism_``.
    prefetch : bool, default=False
        Overlap each worker's next E-step with its previous push (the worker computes on
        parameters that lack its own last update): the engine's ``lag`` of 1.
        ``False`` (lag 0) waits for the reply, which with one worker is exactly
        scikit-learn's online algorithm.
    max_staleness : int, "auto" or None, default="auto"
        Staleness limit: the server *rejects* (never down-weights) a push computed on
        parameters more than this many updates old. Rejected pushes are counted in
        ``n_updates_rejected_`` and ``history_`` (``train/rejected_stale``); with a
        limit given as an int they are also warned about (``StaleUpdatesWarning``).
        ``"auto"`` takes the paper's bound, ``ceil(sqrt(T))`` with ``T`` the server
        updates of the fit (``max_iter`` passes of ``ceil(n_samples / batch_size)``
        minibatches; for :meth:`partial_fit`, the model's updates so far plus this
        call's): the paper's speed-up holds while workers <= T^(1/2), and a worker
        further behind than that contributes stale noise. So that a fit outside that
        regime (many workers, few updates) does not reject the ordinary staleness of
        its own layout, the limit is never below ``2 * n_workers_ * (1 + prefetch)``,
        twice a steady round's staleness. ``None`` accepts any staleness. The value
        used is ``max_staleness_``.
    checkpoint_path : str or path-like, default=None
        Write each checkpoint (see ``checkpoint_every``) of :meth:`fit` to this ``.npz``
        file (plain arrays, read back without pickle). If the file exists when ``fit`` starts, the
        fit resumes from it (the passes it records are not repeated), which reproduces
        an uninterrupted run exactly with one worker and one thread. The parameters and
        the data shape must match the checkpoint's, else ``fit`` refuses it.
    checkpoint_every : int, default=1
        Passes between the driver's checkpoints of the server state (in memory, and to
        ``checkpoint_path`` when given; the last pass always ends with one). A lost
        worker costs the passes since the last checkpoint, which are run again; fewer
        checkpoints save a transfer of ``lambda`` to the driver per pass.
    warmup_updates : int, default=10
        Synchronous warm-up: the first ``warmup_updates`` updates of a model are
        computed one after the other (staleness 0), then the workers run
        asynchronously. While the topics are still near their random start, updates
        computed in parallel from the same ``lambda`` break the symmetry between topics
        in different directions and average into blurred topics (measured:
        :ref:`design-dpsvi`). The warm-up still uses every worker: each of its updates
        is a minibatch's worth of documents taken in equal shares from the workers'
        shards, whose E-steps run in parallel and whose statistics the server adds into
        one SVI step. It is rounded up to whole minibatches per worker. No effect with
        one worker and ``prefetch=False``.

    Attributes
    ----------
    components_ : ndarray of shape (n_components, n_features)
        Variational topic-word parameters ``lambda``: float32 when the training data
        of ``fit`` (or of the first ``partial_fit``) is float32, else float64, as in
        scikit-learn (see Notes).
    exp_dirichlet_component_ : ndarray of shape (n_components, n_features)
        ``exp(E[log beta])``, of ``components_``'s dtype.
    n_batch_iter_ : int
        Number of SVI steps applied, plus one (scikit-learn's convention).
    n_iter_ : int
        Passes over the data.
    bound_ : float
        Final perplexity on the training set (set by :meth:`fit`).
    doc_topic_prior_, topic_word_prior_ : float
        Priors used (the parameters as given, or ``1 / n_components``).
    random_state_ : RandomState instance
        Generator built from ``random_state`` by ``fit`` (or the first
        ``partial_fit``).
    n_features_in_ : int
        Number of features (words) seen during ``fit``.
    feature_names_in_ : ndarray of shape (`n_features_in_`,)
        Defined when ``X`` has string column names.
    parallelism_ : str
        The mode the last fit ran in (``"serial"``, ``"hogwild"``,
        ``"parameter-server"`` or ``"dpsgd"``), from its workers and threads.
    n_workers_ : int
        Workers trained on.
    threads_per_worker_ : list of int
        Numba threads used on each worker.
    n_pushes_sent_, n_updates_applied_, n_updates_rejected_ : int
        Update accounting of the last fit, in pushes: sent = applied + rejected. A step
        of the synchronous warm-up is one push per worker's share of it (see
        ``warmup_updates``), so with several workers there are more pushes than SVI
        steps (``n_batch_iter_ - 1``).
    staleness_mean_, staleness_max_ : float, int
        Staleness of the applied updates (server version at apply minus the version the
        update was computed from).
    staleness_histogram_ : ndarray of int
        Applied updates per staleness value.
    max_staleness_ : int or None
        Staleness limit used by the last fit (``max_staleness`` resolved).
    recovery_events_ : list of dict
        One record per lost worker the fit survived: ``workers`` lost,
        ``resumed_from_pass``, ``resumed_at_update``, ``workers_left``,
        ``updates_lost`` (updates the server applied after the last checkpoint,
        discarded by the recovery) and ``updates_lost_exact`` (False when the server's
        own worker was lost: the count is then the lower bound the driver last read
        from the server, about once a second).
    updates_lost_ : int
        Sum of ``updates_lost`` over ``recovery_events_``.
    history_ : list of dict
        One record per pass: ``time/docs_per_s``, ``train/staleness_mean``,
        ``comm/bytes_pushed``, ``train/minibatch_bound_per_word``,
        ``train/perplexity`` (when evaluated), ... ``train/minibatch_bound_per_word``
        is the documents part of the variational bound (``E[log p(w | theta, beta)] +
        E[log p(theta | alpha)] - E[log q(theta | gamma)]``: the per-document terms of
        Hoffman et al.'s bound, without the topic-word term) of the pass's applied
        minibatches, divided by their tokens: each minibatch's part as its worker's
        E-step found it, at the parameters it pulled, before its own update (so in the
        first pass on documents not trained on yet). A by-product of the E-step,
        computed on every fit; it is not ``-log(perplexity)`` (no topic-word term,
        stale parameters, training data).
    live_metrics_url_ : str or None
        The last fit's page of live curves on the Dask dashboard's server
        (``.../dpsgd/status?fit=<id>``; :doc:`/live_metrics`); None without a dashboard. It
        lives as long as the cluster's scheduler. Dask's own pages cannot link to it
        (``distributed`` has no API to add a link to its navigation bar), so
        ``verbose`` prints it next to the dashboard's link.

    See Also
    --------
    sklearn.decomposition.LatentDirichletAllocation : the serial anchor.

    Notes
    -----
    Determinism: with one worker, results are bit-identical for a fixed
    ``random_state`` and ``threads_per_worker`` (the parallel E-step gives each thread a
    fixed group of documents and its own sufficient-statistic slab, so it is race-free);
    different thread counts sum in a different order and agree to rounding (~1e-9).
    With several workers, the arrival order of pushes varies and results are
    statistically, not bitwise, reproducible.

    Fault tolerance: every ``checkpoint_every`` passes the driver keeps ``lambda`` in
    memory. If a worker leaves the cluster during a pass (killed, pre-empted, out of
    walltime), including the one holding the parameter-server actor, which Dask does not
    restart, the fit continues on the workers left: their shards are placed again, a new
    server starts from the last checkpoint and the passes since are run again (their
    updates are discarded). Up to 3 recoveries per fit; each is logged, warned about and recorded in
    ``recovery_events_``.

    The embedded cluster is sized by ``parallelism`` (see there) unless ``n_workers`` /
    ``threads_per_worker`` say otherwise.

    **Differences from scikit-learn.** Parameters, methods, their signatures, fitted
    attributes, parameter intervals, the initial ``lambda`` for a given
    ``random_state``, ``get_feature_names_out`` and output dtypes are scikit-learn's
    (checked against it in ``tests/decomposition/test_sklearn_parity.py``). What
    differs, and why:

    - ``learning_method`` defaults to ``"online"`` and ``"batch"`` is refused: DPSGD
      distributes minibatch updates.
    - Extra parameters (``n_workers`` to ``warmup_updates``) and fitted attributes
      (``parallelism_`` to ``live_metrics_url_``) describe the distributed run. With
      the defaults, the topics differ from scikit-learn's for the same
      ``random_state``: the initial ``lambda`` is the same, but each worker draws the
      E-step's initial ``gamma`` from its own stream (seeded from ``random_state_``,
      whose state after ``fit`` therefore differs from scikit-learn's), and several
      workers apply their updates asynchronously. With one worker fed scikit-learn's
      draws, the topics are scikit-learn's to rounding.
    - ``n_jobs`` sets numba threads per Dask worker, not joblib jobs: ``None`` means
      every core of the worker's budget (scikit-learn: 1 job), a positive value larger
      than the budget does not oversubscribe, and joblib's ``parallel_config`` context
      has no effect.
    - float32 input: the arithmetic is float64 and the results are cast to float32
      (scikit-learn computes in float32); the dtypes of ``components_``,
      ``exp_dirichlet_component_`` and of ``transform``'s output are scikit-learn's.
    - ``get_feature_names_out`` returns scikit-learn's names,
      ``latentdirichletallocation0``, ..., not ones prefixed with this class's name,
      so that pipelines and ``set_output(transform="pandas")`` columns keyed on them
      keep working when one estimator replaces the other.
    - ``n_iter_`` counts the passes made. When ``evaluate_every`` stops a fit early,
      scikit-learn's is one less (it does not count the pass that triggered the
      stop).
    - ``perplexity`` checks that ``X`` has the fitted number of features (scikit-learn
      resets ``n_features_in_`` there instead).
    - Training data without a single positive count is refused (scikit-learn fits it
      and reports an infinite ``bound_``).
    - ``transform``, ``fit`` and ``partial_fit`` also take Dask arrays (``transform``
      then returns one), computed where their chunks live.
    - ``verbose`` shows a progress bar (scikit-learn prints a line per pass).

    References
    ----------
    S. Mohamad, H. Alamri, A. Bouchachia. Scaling up stochastic gradient descent for
    non-convex optimisation. Machine Learning, 2022.

    M. Hoffman, D. Blei, F. Bach. Online learning for latent Dirichlet allocation.
    NIPS, 2010.

    Examples
    --------
    >>> from dask_dpsgd import DPSVILatentDirichletAllocation
    >>> from dask_dpsgd.datasets import load_nips
    >>> X = load_nips().data[:200]
    >>> lda = DPSVILatentDirichletAllocation(n_components=5, max_iter=1,
    ...                                      random_state=0).fit(X)
    >>> lda.transform(X[:2]).shape
    (2, 5)
    """

    _parameter_constraints: dict = {
        "n_components": [Interval(Integral, 0, None, closed="neither")],
        "doc_topic_prior": [None, Interval(Real, 0, 1, closed="both")],
        "topic_word_prior": [None, Interval(Real, 0, 1, closed="both")],
        "learning_method": [StrOptions({"online", "batch"})],
        "learning_decay": [Interval(Real, 0, 1, closed="both")],
        "learning_offset": [Interval(Real, 1.0, None, closed="left")],
        "max_iter": [Interval(Integral, 0, None, closed="left")],
        "batch_size": [Interval(Integral, 0, None, closed="neither")],
        "evaluate_every": [Interval(Integral, None, None, closed="neither")],
        "total_samples": [Interval(Real, 0, None, closed="neither")],
        "perp_tol": [Interval(Real, 0, None, closed="left")],
        "mean_change_tol": [Interval(Real, 0, None, closed="left")],
        "max_doc_update_iter": [Interval(Integral, 0, None, closed="left")],
        "n_jobs": [None, Integral],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "n_workers": [None, Interval(Integral, 1, None, closed="left")],
        "threads_per_worker": [None, Interval(Integral, 1, None, closed="left")],
        "parallelism": [StrOptions(set(PARALLELISM))],
        "prefetch": ["boolean"],
        "max_staleness": [None, StrOptions({"auto"}),
                          Interval(Integral, 0, None, closed="left")],
        "warmup_updates": [Interval(Integral, 0, None, closed="left")],
        "checkpoint_every": [Interval(Integral, 1, None, closed="left")],
        "checkpoint_path": [None, str, os.PathLike],
    }

    def __init__(self, n_components=10, *, doc_topic_prior=None, topic_word_prior=None,
                 learning_method="online", learning_decay=0.7, learning_offset=10.0,
                 max_iter=10, batch_size=128, evaluate_every=-1, total_samples=1e6,
                 perp_tol=1e-1, mean_change_tol=1e-3, max_doc_update_iter=100,
                 n_jobs=None, verbose=0, random_state=None, n_workers=None,
                 threads_per_worker=None, parallelism="auto",
                 prefetch=False, max_staleness="auto",
                 warmup_updates=10, checkpoint_path=None, checkpoint_every=1):
        self.n_components = n_components
        self.doc_topic_prior = doc_topic_prior
        self.topic_word_prior = topic_word_prior
        self.learning_method = learning_method
        self.learning_decay = learning_decay
        self.learning_offset = learning_offset
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.evaluate_every = evaluate_every
        self.total_samples = total_samples
        self.perp_tol = perp_tol
        self.mean_change_tol = mean_change_tol
        self.max_doc_update_iter = max_doc_update_iter
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.random_state = random_state
        self.n_workers = n_workers
        self.threads_per_worker = threads_per_worker
        self.parallelism = parallelism
        self.prefetch = prefetch
        self.max_staleness = max_staleness
        self.warmup_updates = warmup_updates
        self.checkpoint_path = checkpoint_path
        self.checkpoint_every = checkpoint_every

    # ------------------------------------------------------------------ helpers
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float32", "float64"]
        # Several workers apply pushes in arrival order, which varies run to run.
        tags.non_deterministic = (self.n_workers != 1
                                  and self.parallelism not in ("serial", "hogwild"))
        return tags

    def _check_params_vs_input(self) -> None:
        if self.learning_method == "batch":
            raise ValueError(
                "learning_method='batch' is not supported by "
                "DPSVILatentDirichletAllocation: DPSGD distributes stochastic "
                "(minibatch) updates. Use learning_method='online' (the default), or "
                "sklearn.decomposition.LatentDirichletAllocation for batch VB."
            )

    def _thread_cap(self) -> int | None:
        """``n_jobs`` for the thread budget (``cluster.apply_n_jobs``); 0 is refused."""
        if self.n_jobs is None:
            return None
        if self.n_jobs == 0:
            raise ValueError(
                "n_jobs=0 has no meaning (as in scikit-learn and joblib); use None, a "
                "positive int (at most that many numba threads per worker) or a "
                "negative one (-1: all of each worker's cores, -2: all but one, ...)")
        return int(self.n_jobs)

    def _check_X(self, X: Any, *, reset: bool, whom: str) -> tuple[Any, Any]:
        """Validated float64 CSR counts (or a Dask array checked on its workers), and
        the dtype of the model they make when ``reset`` (scikit-learn's rule: float32
        input, float32 model; anything else, float64)."""
        if is_dask_array(X):
            if X.ndim != 2:
                raise ValueError(f"{whom}: expected a 2D Dask array, got {X.ndim}D")
            if np.isnan(X.shape[1]):
                raise ValueError(f"{whom}: the Dask array's number of columns is unknown; "
                                 "call compute_chunk_sizes() first")
            if not np.issubdtype(X.dtype, np.number):
                raise ValueError(f"{whom}: Dask array dtype {X.dtype} is not numeric")
            if reset:
                self.n_features_in_ = int(X.shape[1])
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            elif X.shape[1] != self.n_features_in_:
                raise ValueError(
                    f"X has {X.shape[1]} features, but {type(self).__name__} is "
                    f"expecting {self.n_features_in_} features as input.")
            return X, (np.float32 if X.dtype == np.float32 else np.float64)
        X = validate_data(self, X, reset=reset, accept_sparse="csr",
                          dtype=[np.float64, np.float32])
        dtype = X.dtype.type
        check_non_negative(X, whom)
        # A copy: sum_duplicates/sort_indices work in place, and validate_data returns
        # the caller's own float64 CSR matrix.
        X = sp.csr_matrix(X, dtype=np.float64, copy=True)
        X.sum_duplicates()
        X.sort_indices()
        return X, dtype

    def _init_latent_vars(self, n_features: int, dtype: Any = np.float64) -> None:
        # Same draws as scikit-learn's _init_latent_vars, so a fixed random_state starts
        # both estimators from the same lambda (cast to the model's dtype, as there).
        self.random_state_ = check_random_state(self.random_state)
        self.n_batch_iter_ = 1
        self.n_iter_ = 0
        self.doc_topic_prior_ = (1.0 / self.n_components if self.doc_topic_prior is None
                                 else self.doc_topic_prior)
        self.topic_word_prior_ = (1.0 / self.n_components
                                  if self.topic_word_prior is None
                                  else self.topic_word_prior)
        self.components_ = self.random_state_.gamma(
            100.0, 0.01, (self.n_components, n_features)).astype(dtype, copy=False)
        self._update_exp_dirichlet()

    def _update_exp_dirichlet(self) -> None:
        """``exp(E[log beta])`` of ``components_``: float64 arithmetic, its dtype."""
        from dask_dpsgd._kernels.special import dirichlet_expectation

        self.exp_dirichlet_component_ = np.exp(
            dirichlet_expectation(self.components_)).astype(self.components_.dtype,
                                                            copy=False)

    def _lambda64(self) -> np.ndarray:
        """``components_`` in float64, the dtype of every computation."""
        return np.asarray(self.components_, dtype=np.float64)

    def _config(self, total_samples: float) -> SVIConfig:
        return SVIConfig(
            n_components=self.n_components,
            doc_topic_prior=float(self.doc_topic_prior_),
            topic_word_prior=float(self.topic_word_prior_),
            learning_offset=float(self.learning_offset),
            learning_decay=float(self.learning_decay), batch_size=self.batch_size,
            total_samples=float(total_samples),
            max_doc_update_iter=self.max_doc_update_iter,
            mean_change_tol=float(self.mean_change_tol))

    def _train(self, X: Any, *, total_samples: float, n_passes: int,
               evaluate_every: int, compute_bound: bool, total_updates: int,
               start_pass: int = 0,
               root_seed: int | None = None, on_checkpoint: Any = None,
               state0: dict[str, np.ndarray] | None = None) -> None:
        """Run DPSVI from the current ``components_`` and record the outcome."""
        from tqdm.auto import tqdm

        if root_seed is None:
            root_seed = int(self.random_state_.randint(np.iinfo(np.int32).max))
        lam0 = np.ascontiguousarray(self._lambda64().T)
        first_step = self.n_batch_iter_
        algorithm = SVIAlgorithm(self._config(total_samples), lam0, first_step,
                                 int(self.warmup_updates))
        resume = None
        if state0 is not None:
            resume = engine.Checkpoint({"lambda": lam0, "state": state0}, 0, start_pass)
        bar = None
        title = f"DPSVI LDA, {self.n_components} topics, {n_passes} pass(es)"

        def max_staleness(n_workers: int) -> int | None:
            self.max_staleness_ = resolve_max_staleness(
                self.max_staleness, total_updates, n_workers, int(self.prefetch))
            return self.max_staleness_

        def on_start(start: engine.FitStart) -> None:
            nonlocal bar
            if self.verbose:
                bar = tqdm(total=n_passes, desc="DPSVI passes", unit="pass")
                banner = live_page_banner(start.dashboard_link, start.live_url)
                if banner:
                    bar.write(banner)

        def progress(record: dict[str, Any]) -> None:
            if bar is not None:
                post = {"docs/s": f"{record['time/docs_per_s']:.0f}",
                        "stale": f"{record['train/staleness_mean']:.2f}"}
                if BOUND_KEY in record:
                    post["bound/word"] = f"{record[BOUND_KEY]:.3f}"
                if "train/perplexity" in record:
                    post["perplexity"] = f"{record['train/perplexity']:.1f}"
                bar.set_postfix(post)
                bar.update(1)

        def write(ckpt: engine.Checkpoint) -> None:
            on_checkpoint(ckpt.snapshot["lambda"], ckpt.snapshot["state"],
                          first_step + ckpt.updates_done, ckpt.rounds_done)

        try:
            result = engine.fit(
                algorithm, X, n_rounds=start_pass + n_passes,
                parallelism=self.parallelism, n_workers=self.n_workers,
                threads_per_worker=self.threads_per_worker, n_jobs=self._thread_cap(),
                lag=int(self.prefetch), max_staleness=max_staleness,
                random_state=root_seed, evaluate_every=evaluate_every,
                tol=float(self.perp_tol), final_score=compute_bound,
                checkpoint_every=int(self.checkpoint_every),
                on_checkpoint=None if on_checkpoint is None else write, resume=resume,
                progress=progress, title=title, on_start=on_start,
                verbose=self.verbose)
        finally:
            if bar is not None:
                bar.close()
        record_layout(self, result.threads)
        self.components_ = np.ascontiguousarray(result.snapshot["lambda"].T).astype(
            self.components_.dtype, copy=False)
        self._update_exp_dirichlet()
        self.n_batch_iter_ = first_step + result.updates_done
        self.n_iter_ += result.rounds_done - start_pass
        stats = result.counts
        record_server(self, counts=stats, pushes_sent=result.pushes_sent,
                      history=result.history, live_url=result.live_url,
                      events=[e.as_dict() for e in result.events],
                      restart_point="the last checkpoint", stacklevel=3)
        rejected = self.n_updates_rejected_
        self.comm_bytes_pushed_ = stats.bytes_pushed
        self.comm_bytes_pulled_ = stats.bytes_pulled
        if result.score is not None:
            self.bound_ = np.float64(result.score)
            if np.isnan(self.bound_):
                _warn_undefined_bound(self, "bound_", stacklevel=3)
        if stats.n_received != result.pushes_sent or (
                stats.n_applied + rejected != stats.n_received):
            raise RuntimeError(
                f"update accounting failed: workers sent {result.pushes_sent} pushes, the "
                f"server received {stats.n_received}, applied {stats.n_applied} "
                f"and rejected {rejected}")
        if stats.n_rejected_nonfinite:
            raise FloatingPointError(
                f"{stats.n_rejected_nonfinite} update(s) held NaN or infinity and were "
                "rejected by the parameter server; the model was not corrupted, but the "
                "fit did not use them. Check the input for extreme counts.")
        _warn_stale_updates(stats.n_rejected_stale, stats.n_received,
                            self.max_staleness_, self.max_staleness == "auto",
                            stacklevel=3)

    # ------------------------------------------------------------------ API
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Learn the topics of X by DPSVI.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
            Document-word counts.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : DPSVILatentDirichletAllocation
            Fitted estimator.
        """
        self._check_params_vs_input()
        whom = "DPSVILatentDirichletAllocation.fit"
        X, dtype = self._check_X(X, reset=True, whom=whom)
        if sp.issparse(X):
            check_counts(X, whom)
        self._init_latent_vars(X.shape[1], dtype)
        start_pass, root_seed, on_checkpoint, state0 = 0, None, None, None
        if self.checkpoint_path is not None:
            fingerprint = self._fingerprint(X.shape)
            if os.path.exists(self.checkpoint_path):
                start_pass, root_seed, state0 = self._resume(fingerprint)
            else:
                root_seed = int(self.random_state_.randint(np.iinfo(np.int32).max))
            on_checkpoint = self._checkpoint_writer(fingerprint, root_seed)
        self._train(X, total_samples=X.shape[0],
                    n_passes=max(0, self.max_iter - start_pass),
                    total_updates=self.max_iter * -(-X.shape[0] // self.batch_size),
                    evaluate_every=self.evaluate_every, compute_bound=True,
                    start_pass=start_pass, root_seed=root_seed, on_checkpoint=on_checkpoint,
                    state0=state0)
        return self

    def _fingerprint(self, shape: tuple[int, int]) -> dict[str, Any]:
        """What a checkpoint must agree on to be resumed by this fit."""
        return {"n_samples": int(shape[0]), "n_features": int(shape[1]),
                **{k: v for k, v in self.get_params().items()
                   if k in ("n_components", "doc_topic_prior", "topic_word_prior",
                            "learning_decay", "learning_offset", "batch_size",
                            "mean_change_tol", "max_doc_update_iter")}}

    def _resume(self, fingerprint: dict[str, Any]
                ) -> tuple[int, int, dict[str, np.ndarray]]:
        arrays, meta = load_checkpoint(self.checkpoint_path)
        check_fingerprint(self.checkpoint_path, meta, fingerprint)
        if "components" not in arrays:
            raise ValueError(f"checkpoint {self.checkpoint_path} holds no components; "
                             "delete it or point checkpoint_path elsewhere")
        lam = np.asarray(arrays["components"], dtype=np.float64)
        if lam.shape != self.components_.shape or not np.isfinite(lam).all() or (
                lam <= 0).any():
            raise ValueError(f"checkpoint {self.checkpoint_path} holds invalid topics "
                             f"(shape {lam.shape}, expected {self.components_.shape}, "
                             "positive and finite)")
        self.components_ = lam.astype(self.components_.dtype, copy=False)
        self._update_exp_dirichlet()
        self.n_batch_iter_ = int(meta["n_batch_iter"])
        self.n_iter_ = int(meta["passes_done"])
        # The file's server_* arrays are the server's internal state (SVIRule); files
        # of format 1 named them raw_* and the root seed "entropy".
        prefix = "server_" if "server_M" in arrays else "raw_"
        state = {k: arrays[prefix + k] for k in ("M", "scale", "M_rowsum")
                 if prefix + k in arrays}
        if len(state) != 3 or state["M"].shape != lam.T.shape:
            raise ValueError(f"checkpoint {self.checkpoint_path} lacks the parameter "
                             "server's state (server_M, server_scale, server_M_rowsum)")
        return int(meta["passes_done"]), checkpoint_root_seed(meta), state

    def _checkpoint_writer(self, fingerprint: dict[str, Any], root_seed: int) -> Any:
        path = self.checkpoint_path

        def write(lam_wm: np.ndarray, state: dict[str, np.ndarray], step: int,
                  passes_done: int) -> None:
            save_checkpoint(path, {"components": np.ascontiguousarray(lam_wm.T),
                                   **{f"server_{k}": v for k, v in state.items()}},
                            {"fingerprint": fingerprint, "n_batch_iter": int(step),
                             "passes_done": int(passes_done),
                             "root_seed": int(root_seed),
                             "format": "dask-dpsgd-lda-checkpoint-2"})

        return write

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """One online pass over X (``total_samples`` documents in the corpus).

        Parameters
        ----------
        X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
            Document-word counts.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        self : DPSVILatentDirichletAllocation
            Partially fitted estimator.
        """
        self._check_params_vs_input()
        first_time = not hasattr(self, "components_")
        whom = "DPSVILatentDirichletAllocation.partial_fit"
        X, dtype = self._check_X(X, reset=first_time, whom=whom)
        if sp.issparse(X):
            check_counts(X, whom)
        if first_time:
            self._init_latent_vars(X.shape[1], dtype)
        self._train(X, total_samples=self.total_samples, n_passes=1, evaluate_every=0,
                    compute_bound=False,
                    total_updates=(self.n_batch_iter_ - 1
                                   + -(-X.shape[0] // self.batch_size)))
        self.n_iter_ -= 1  # scikit-learn's partial_fit does not count passes
        return self

    def _unnormalized_transform(self, X: Any) -> Any:
        exp_beta_wm = np.ascontiguousarray(self.exp_dirichlet_component_.T,
                                           dtype=np.float64)
        dtype = self.components_.dtype
        args = dict(exp_beta_wm=exp_beta_wm, alpha=float(self.doc_topic_prior_),
                    max_iter=self.max_doc_update_iter, tol=float(self.mean_change_tol),
                    result_dtype=dtype)
        if is_dask_array(X):
            return map_row_blocks(X, _transform_block, self.n_components,
                                  out_dtype=dtype, **args)
        return _transform_block(X, **args)

    def transform(self, X, *, normalize=True):
        """Document-topic distribution of X under the fitted topics.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
            Document-word counts.
        normalize : bool, default=True
            Normalise each row to sum to one.

        Returns
        -------
        doc_topic_distr : ndarray of shape (n_samples, n_components)
            A Dask array when X is one. Of ``components_``'s dtype (float32 for a
            model fitted on float32 data), as in scikit-learn.
        """
        check_is_fitted(self)
        X, _ = self._check_X(X, reset=False,
                             whom="DPSVILatentDirichletAllocation.transform")
        gamma = self._unnormalized_transform(X)
        if normalize:
            gamma = gamma / gamma.sum(axis=1)[:, np.newaxis]
        return gamma

    def fit_transform(self, X, y=None, *, normalize=True):
        """Fit to X, then transform it.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Document-word counts.
        y : Ignored
            Not used, present for API consistency.
        normalize : bool, default=True
            Normalise each row of the result to sum to one.

        Returns
        -------
        X_new : ndarray of shape (n_samples, n_components)
            Document-topic distribution.
        """
        return self.fit(X, y).transform(X, normalize=normalize)

    def _approx_bound(self, X: sp.csr_matrix, gamma: np.ndarray,
                      sub_sampling: bool) -> float:
        """scikit-learn's variational bound, from the kernels' terms (float64)."""
        lam = self._lambda64()
        elog_beta_wm = lda_kernels.elog_beta_rows(np.ascontiguousarray(lam.T),
                                                  lam.sum(axis=1))
        score = lda_kernels.doc_bound(X.indptr.astype(np.int64),
                                      X.indices.astype(np.int64), X.data,
                                      np.asarray(gamma, dtype=np.float64), elog_beta_wm,
                                      self.doc_topic_prior_)
        if sub_sampling:
            score *= float(self.total_samples) / X.shape[0]
        return score + lda_kernels.topic_word_bound(lam.T, self.topic_word_prior_)

    def _local(self, X: Any, whom: str) -> sp.csr_matrix:
        check_is_fitted(self)
        if is_dask_array(X):
            X = X.compute()
        return self._check_X(X, reset=False, whom=whom)[0]

    def score(self, X, y=None):
        """Approximate log-likelihood (variational bound) of X, as scikit-learn's.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Document-word counts.
        y : Ignored
            Not used, present for API consistency.

        Returns
        -------
        score : float
            NaN (with a warning) when a prior is 0, as in scikit-learn.
        """
        X = self._local(X, "DPSVILatentDirichletAllocation.score")
        score = np.float64(self._approx_bound(X, self._unnormalized_transform(X), False))
        if np.isnan(score):
            _warn_undefined_bound(self, "score", stacklevel=2)
        return score

    def perplexity(self, X, sub_sampling=False):
        """Approximate perplexity ``exp(-bound / tokens)``, as scikit-learn's.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Document-word counts.
        sub_sampling : bool, default=False
            Scale the document part to ``total_samples`` documents.

        Returns
        -------
        score : float
            Perplexity; NaN (with a warning) when a prior is 0, as in scikit-learn.
        """
        X = self._local(X, "DPSVILatentDirichletAllocation.perplexity")
        bound = self._approx_bound(X, self._unnormalized_transform(X), sub_sampling)
        word_cnt = X.sum()
        if sub_sampling:
            word_cnt *= float(self.total_samples) / X.shape[0]
        perplexity = np.exp(-np.float64(bound) / word_cnt)
        if np.isnan(perplexity):
            _warn_undefined_bound(self, "perplexity", stacklevel=2)
        return perplexity

    def get_feature_names_out(self, input_features=None):
        """Names of the topics, scikit-learn's: ``latentdirichletallocation0``, ...

        The same names as :class:`sklearn.decomposition.LatentDirichletAllocation`
        (not prefixed with this class's name), so that pipelines and pandas output
        keyed on them keep working when one estimator replaces the other.

        Parameters
        ----------
        input_features : array-like of str or None, default=None
            Only checked against ``feature_names_in_``.

        Returns
        -------
        feature_names_out : ndarray of str objects
            ``n_components`` names.
        """
        check_is_fitted(self, "_n_features_out")
        _check_feature_names_in(self, input_features, generate_names=False)
        return np.asarray([f"latentdirichletallocation{i}"
                           for i in range(self._n_features_out)], dtype=object)

    @property
    def _n_features_out(self) -> int:
        return self.components_.shape[0]
