"""Global parameters of DPSGD, their version counter and the staleness bookkeeping.

The parameter server applies updates in arrival order (docs/design.rst, "DPSGD"). Every
update carries the version of the parameters it was computed from; ``staleness = version
at apply - base version`` is what the paper's bounds (cores <= T^(1/4), workers <=
T^(1/2)) control, so it is measured for every push and kept as counts per value.

An *update rule* says what the parameters are and how one update changes them; the
:class:`ServerState` around it is the same for every estimator: version, counts of
applied and rejected updates, staleness statistics, bytes moved. Everything here is plain
numpy so it is tested without a cluster; the actor in :mod:`dask_dpsgd._server.actor` is a
thin shell that calls these methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import numpy as np

from dask_dpsgd._kernels.a2c import running_mean_std_merge
from dask_dpsgd._kernels.lda import gather_rows_affine, scatter_add_rows

# Initial length of the staleness histogram; it grows (doubling) to hold any value, so
# the counts are exact however late an update arrives.
STALENESS_BINS = 64


def staleness_bound(total_updates: int, n_workers: int = 1, lag: int = 0) -> int:
    """The default staleness limit (``max_staleness="auto"``) of a fit.

    The paper's speed-up holds while workers <= T^(1/2), T the number of server
    updates (Mohamad, Alamri & Bouchachia 2022; Lian et al. 2015 bound the staleness
    of asynchronous non-convex SGD by the same order): ``ceil(sqrt(T))`` accepts every
    update of a fit inside that regime and rejects those of a worker that fell further
    behind (paused, swapped out, on a slow node) than the theory allows.

    A fit outside the regime (many workers, few updates) would then reject the
    ordinary staleness of its own layout and discard most of its work, so the limit is
    never below twice the staleness of a steady round: each of the ``n_workers``
    workers pushes once per round, and with ``lag`` (prefetch) a worker's own previous
    push is in flight too, so a push is normally ``n_workers * (1 + lag) - 1`` updates
    old.

    Parameters
    ----------
    total_updates : int
        Server updates the fit will make (``T``).
    n_workers : int
        Workers pushing to the server.
    lag : int
        Pushes a worker may have in flight while computing (0 or 1).

    Returns
    -------
    int
        ``max(ceil(sqrt(total_updates)), 2 * n_workers * (1 + lag))``.
    """
    paper = math.ceil(math.sqrt(max(0, int(total_updates))))
    return max(paper, 2 * int(n_workers) * (1 + int(lag)))


def resolve_max_staleness(setting: int | str | None, total_updates: int,
                          n_workers: int, lag: int) -> int | None:
    """An estimator's ``max_staleness`` as used: ``"auto"`` becomes
    :func:`staleness_bound`, an int or ``None`` stays as given."""
    if setting == "auto":
        return staleness_bound(total_updates, n_workers, lag)
    return setting  # type: ignore[return-value]


class UpdateRule(Protocol):
    """How an estimator's global parameters are stored, updated and read."""

    def apply(self, delta: Any, step: int) -> None:
        """Apply one update in place; ``step`` counts the updates applied before it."""

    def is_finite(self, delta: Any) -> bool:
        """Whether the update holds only finite numbers."""

    def pull(self, request: Any) -> Any:
        """Read the parameters a worker asks for (copies, never views)."""

    def snapshot(self) -> dict[str, np.ndarray]:
        """The full parameters as plain arrays (for checkpoints and the fitted model)."""

    def nbytes(self, obj: Any) -> int:
        """Bytes of an update or a pulled payload, for communication accounting."""

    # Rules whose updates can be computed in parts (the synchronous warm-up, see
    # ServerState.push_part) also define ``merge(deltas) -> delta``.


class ServerStats(NamedTuple):
    """The server's counters (:meth:`ServerState.stats`): every received push is
    exactly one of applied / rejected (stale or non-finite)."""

    version: int
    n_received: int
    n_applied: int
    n_rejected_stale: int
    n_rejected_nonfinite: int
    staleness_mean: float
    staleness_sum: int
    staleness_max: int
    bytes_pushed: int
    bytes_pulled: int
    pushes_by_worker: dict[int, int]


class SVIUpdate(NamedTuple):
    """One update of :class:`SVIRule`: a minibatch's sparse sufficient statistics.

    Attributes
    ----------
    words : ndarray of int64, shape (n,)
        Sorted distinct word ids of the minibatch (a merged update may repeat them).
    sstats : ndarray of float64, shape (n, K)
        Their sufficient statistics, word-major.
    n_docs : int
        Documents of the minibatch (``|B|`` of the step ``D/|B|``).
    bound : tuple of float or None
        ``(documents part of the minibatch's variational bound, its tokens)`` as the
        worker's E-step found them, for the live metrics; not checked for finiteness (a
        zero ``doc_topic_prior`` makes the bound NaN, never the update).
    """

    words: np.ndarray
    sstats: np.ndarray
    n_docs: int
    bound: tuple[float, float] | None = None


class SVIParams(NamedTuple):
    """What :class:`SVIRule` serves for a request of words: their rows of ``lambda``
    (word-major) and ``lambda``'s column sums."""

    lam_rows: np.ndarray
    rowsums: np.ndarray


class A2CUpdate(NamedTuple):
    """One push of :class:`A2CRule`.

    Attributes
    ----------
    theta : ndarray of float64, shape (n_params,)
        The optimiser steps the worker applied since its last push, summed.
    steps : int
        Environment steps taken since then.
    episodes : ndarray of float64, shape (n, 3)
        Episodes finished since then: ``(global step, return, length)``.
    obs_moments : tuple or None
        ``(mean, var, count)`` of the observations seen since then (observation
        normalisation), else ``None``.
    return_moments : tuple or None
        ``(mean, var, count)`` (arrays of shape ``(1,)``) of the discounted returns
        seen since then (reward normalisation), else ``None``.
    train_stats : ndarray of float64, shape (4,) or None
        The means over the push's updates of SB3's logged ``policy_loss``,
        ``entropy_loss``, ``value_loss`` and ``explained_variance``.
    """

    theta: np.ndarray
    steps: int
    episodes: np.ndarray
    obs_moments: tuple[np.ndarray, np.ndarray, float] | None = None
    return_moments: tuple[np.ndarray, np.ndarray, float] | None = None
    train_stats: np.ndarray | None = None


class A2CParams(NamedTuple):
    """What :class:`A2CRule` serves: the parameters, the global step count, the
    observation moments, whether training is done (budget or target return) and the
    moments ``(mean, var, count)`` of the discounted return (reward normalisation)."""

    theta: np.ndarray
    total_steps: int
    obs_mean: np.ndarray
    obs_var: np.ndarray
    done: bool
    return_moments: tuple[float, float, float] = (0.0, 1.0, 1e-4)


@dataclass(slots=True)
class PushOutcome:
    """What the server did with one update."""

    applied: bool
    staleness: int
    version: int
    reason: str = ""


class ServerState:
    """Versioned parameters plus the counters a user needs to trust a distributed run.

    Parameters
    ----------
    rule : UpdateRule
        Storage and update of the parameters.
    max_staleness : int or None
        Updates whose staleness exceeds this are rejected: counted in
        ``n_rejected_stale``, not applied, never down-weighted. ``None`` accepts any
        staleness.

    Attributes
    ----------
    version : int
        Number of updates applied so far.
    n_received, n_applied, n_rejected_stale, n_rejected_nonfinite : int
        Every received update is exactly one of applied / rejected.
    staleness_counts : ndarray of int64
        Applied updates per staleness value (index = staleness), grown as needed.
    """

    def __init__(self, rule: UpdateRule, *, max_staleness: int | None = None) -> None:
        self.rule = rule
        self.max_staleness = max_staleness
        self.version = 0
        self.n_received = 0
        self.n_applied = 0
        self.n_rejected_stale = 0
        self.n_rejected_nonfinite = 0
        self.staleness_counts = np.zeros(STALENESS_BINS, dtype=np.int64)
        self.staleness_sum = 0
        self.staleness_max = 0
        self.bytes_pushed = 0
        self.bytes_pulled = 0
        self.pushes_by_worker: dict[int, int] = {}
        # Parts received of the synchronous updates not complete yet (push_part).
        self._parts: dict[int, list[tuple[Any, int]]] = {}

    def _receive(self, delta: Any, base_version: int, worker: int) -> None:
        """Count one push (a whole update or a part) and check its base version."""
        if base_version > self.version or base_version < 0:
            raise ValueError(
                f"push from worker {worker} claims base_version={base_version}, but the "
                f"server is at version {self.version}: the update cannot come from "
                "these parameters"
            )
        self.n_received += 1
        self.pushes_by_worker[worker] = self.pushes_by_worker.get(worker, 0) + 1
        self.bytes_pushed += self.rule.nbytes(delta)

    def _settle(self, delta: Any, base_version: int, n_pushes: int = 1) -> PushOutcome:
        """Apply or reject one update made of ``n_pushes`` received pushes."""
        staleness = self.version - base_version
        if not self.rule.is_finite(delta):
            self.n_rejected_nonfinite += n_pushes
            return PushOutcome(False, staleness, self.version, "nonfinite")
        if self.max_staleness is not None and staleness > self.max_staleness:
            self.n_rejected_stale += n_pushes
            return PushOutcome(False, staleness, self.version, "stale")
        self.rule.apply(delta, self.version)
        self.version += 1
        self.n_applied += n_pushes
        if staleness >= len(self.staleness_counts):
            grown = np.zeros(max(2 * len(self.staleness_counts), staleness + 1),
                             dtype=np.int64)
            grown[:len(self.staleness_counts)] = self.staleness_counts
            self.staleness_counts = grown
        self.staleness_counts[staleness] += n_pushes
        self.staleness_sum += staleness * n_pushes
        self.staleness_max = max(self.staleness_max, staleness)
        return PushOutcome(True, staleness, self.version)

    def push_part(self, delta: Any, base_version: int, worker: int, slot: int,
                  n_parts: int) -> PushOutcome:
        """One of the ``n_parts`` pushes that together make the synchronous update ``slot``.

        The synchronous warm-up splits each of its minibatches over the workers: every
        worker computes the E-step of its share from the same parameters, and the
        server applies the sum of the shares as one update (``rule.merge``) when the
        last one arrives: serial SVI's step, computed in parallel. Until then the parts
        wait here and the outcome returned is ``applied=True`` at the current version
        (provisional; the counters settle every part together with the update).

        Each part counts as a received push; the update's verdict counts for each of
        its parts, so ``n_received == n_applied + n_rejected`` holds once every
        update is complete.
        """
        if n_parts < 1:
            raise ValueError(f"n_parts must be >= 1, got {n_parts}")
        self._receive(delta, base_version, worker)
        parts = self._parts.setdefault(slot, [])
        parts.append((delta, base_version))
        if len(parts) < n_parts:
            return PushOutcome(True, self.version - base_version, self.version)
        del self._parts[slot]
        if n_parts == 1:
            merged = parts[0][0]
        else:
            merge = getattr(self.rule, "merge", None)
            if merge is None:
                raise TypeError(f"{type(self.rule).__name__} cannot merge the parts of a "
                                "synchronous update: it defines no merge(deltas)")
            merged = merge([d for d, _ in parts])
        return self._settle(merged, min(v for _, v in parts), n_parts)

    def push(self, delta: Any, base_version: int, worker: int = 0) -> PushOutcome:
        """Apply ``delta`` computed from parameters at ``base_version``, or reject it.

        Parameters
        ----------
        delta : object
            The update, in the rule's format.
        base_version : int
            ``version`` of the parameters the worker computed ``delta`` from.
        worker : int
            Index of the sending worker, for per-worker counts.

        Returns
        -------
        PushOutcome
        """
        self._receive(delta, base_version, worker)
        return self._settle(delta, base_version)

    def pull(self, request: Any = None) -> tuple[int, Any]:
        """Return ``(version, payload)`` for a worker's request."""
        payload = self.rule.pull(request)
        self.bytes_pulled += self.rule.nbytes(payload)
        return self.version, payload

    def stats(self) -> ServerStats:
        """Counters as plain Python numbers (cheap; safe to poll)."""
        n = self.n_applied
        return ServerStats(
            version=self.version, n_received=self.n_received, n_applied=n,
            n_rejected_stale=self.n_rejected_stale,
            n_rejected_nonfinite=self.n_rejected_nonfinite,
            staleness_mean=self.staleness_sum / n if n else 0.0,
            staleness_sum=self.staleness_sum, staleness_max=self.staleness_max,
            bytes_pushed=self.bytes_pushed, bytes_pulled=self.bytes_pulled,
            pushes_by_worker=dict(self.pushes_by_worker))

    def staleness_histogram(self) -> np.ndarray:
        """Applied updates per staleness value (copy)."""
        return self.staleness_counts.copy()


def _payload_nbytes(obj: Any) -> int:
    """Bytes held by the numpy arrays inside a (nested) tuple/list/dict payload."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (tuple, list)):
        return sum(_payload_nbytes(o) for o in obj)
    if isinstance(obj, dict):
        return sum(_payload_nbytes(o) for o in obj.values())
    return 8 if isinstance(obj, (int, float, np.number)) else 0


class SVIRule:
    """Topic-word ``lambda`` of LDA under the stochastic variational inference step.

    Update for a minibatch ``B`` of a corpus of ``D`` documents (Hoffman et al. 2013,
    eq. 6-7; scikit-learn's ``_em_step``)::

        rho_t  = (learning_offset + t) ** -learning_decay
        lambda = (1 - rho_t) lambda + rho_t (eta + D/|B| S)

    Storage keeps that step sparse, the dense decay lazy (docs/design.rst, "DPSVI"):
    ``lambda = eta + scale * M`` with ``M`` word-major ``(V, K)``. Since
    ``(1 - rho)(eta + mu) + rho (eta + c S) = eta + (1 - rho) mu + rho c S``, one step is
    ``scale *= 1 - rho`` and ``M[words] += rho c S / scale``: work and bytes in proportion
    to the distinct words of the minibatch. Row sums of ``M`` are kept alongside, and
    ``M`` is folded back to ``scale = 1`` (and the sums recomputed exactly) whenever
    ``scale`` falls below ``RESCALE_BELOW``.

    Parameters
    ----------
    lam : ndarray of float64, shape (V, K)
        Initial ``lambda``, word-major.
    eta : float
        ``topic_word_prior``.
    learning_offset, learning_decay : float
        ``tau_0`` and ``kappa`` of the step size.
    total_samples : float
        ``D``.
    first_step : int
        ``t`` of the first update (scikit-learn starts ``n_batch_iter_`` at 1).

    Attributes
    ----------
    bound_sum, bound_tokens : float
        What the workers reported with the updates applied so far: the sum of their
        minibatches' documents part of the variational bound (computed by the E-step at
        the parameters the worker used) and of their tokens. Their ratio is the
        minibatch per-word bound the live metrics show; the server only adds them up.
    bound_updates : int
        Applied updates that carried a bound.

    Notes
    -----
    An update is an :class:`SVIUpdate` (or a tuple of its fields). A pull request is
    an array of word ids (``None``: all); the payload is an :class:`SVIParams`.
    """

    RESCALE_BELOW = 1e-6

    def __init__(self, lam: np.ndarray, eta: float, learning_offset: float,
                 learning_decay: float, total_samples: float, first_step: int = 1,
                 state: dict[str, np.ndarray] | None = None) -> None:
        self.eta = float(eta)
        self.learning_offset = float(learning_offset)
        self.learning_decay = float(learning_decay)
        self.total_samples = float(total_samples)
        self.first_step = int(first_step)
        if state is not None:
            # Exact restart from another server's internal state (a checkpoint), so a
            # resumed fit repeats an uninterrupted one bit for bit.
            self.M = np.array(state["M"], dtype=np.float64, order="C")
            self.scale = float(state["scale"])
            self.M_rowsum = np.array(state["M_rowsum"], dtype=np.float64)
        else:
            lam = np.asarray(lam, dtype=np.float64)
            if lam.ndim != 2:
                raise ValueError(f"lambda must be 2-D (V words, K topics), got shape "
                                 f"{lam.shape}")
            self.M = np.ascontiguousarray(lam - self.eta)  # own copy
            self.scale = 1.0
            self.M_rowsum = self.M.sum(axis=0)
        self.n_features = self.M.shape[0]
        self.bound_sum = 0.0
        self.bound_tokens = 0.0
        self.bound_updates = 0

    def _word_ids(self, words: Any, what: str) -> np.ndarray:
        """``words`` as int64 ids, checked to lie in ``[0, V)`` (the kernels index
        ``M`` with them unchecked)."""
        ids = np.asarray(words, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError(f"{what}'s word ids must be 1-D, got shape {ids.shape}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_features):
            raise ValueError(f"{what} names word ids {ids.min()}..{ids.max()}, outside "
                             f"the vocabulary [0, {self.n_features}) of lambda "
                             f"({self.n_features} words x {self.M.shape[1]} topics, "
                             "word-major)")
        return ids

    def rho(self, step: int) -> float:
        """Step size ``rho_t`` for the ``step``-th applied update (0-based)."""
        return float((self.learning_offset + self.first_step + step) ** -self.learning_decay)

    def apply(self, delta: SVIUpdate, step: int) -> None:
        """Apply one SVI step from a minibatch's sparse sufficient statistics."""
        words, sstats, batch_docs, bound = SVIUpdate(*delta)
        words = self._word_ids(words, "an update")
        sstats = np.ascontiguousarray(sstats, dtype=np.float64)
        if sstats.shape != (len(words), self.M.shape[1]):
            raise ValueError(f"an update's statistics have shape {sstats.shape}, "
                             f"expected (n_words, K) = ({len(words)}, {self.M.shape[1]})")
        if bound is not None:
            self.bound_sum += float(bound[0])
            self.bound_tokens += float(bound[1])
            self.bound_updates += 1
        rho = self.rho(step)
        self.scale *= 1.0 - rho
        if self.scale < self.RESCALE_BELOW:
            self._fold_scale()
        # One scatter-add (a merged update may repeat words: they add up).
        scatter_add_rows(self.M, self.M_rowsum, words, sstats,
                         rho * self.total_samples / batch_docs / self.scale)

    @staticmethod
    def merge(deltas: list[SVIUpdate]) -> SVIUpdate:
        """One update from the parts of a minibatch: their statistics, documents and
        (when every part has one) bounds and tokens add."""
        parts = [SVIUpdate(*d) for d in deltas]
        bounds = [p.bound for p in parts]
        bound = None
        if all(b is not None for b in bounds):
            bound = (sum(float(b[0]) for b in bounds if b is not None),
                     sum(float(b[1]) for b in bounds if b is not None))
        return SVIUpdate(
            np.concatenate([np.asarray(p.words, dtype=np.int64) for p in parts]),
            np.concatenate([np.asarray(p.sstats, dtype=np.float64) for p in parts]),
            sum(int(p.n_docs) for p in parts), bound)

    def _fold_scale(self) -> None:
        self.M *= self.scale
        self.scale = 1.0
        self.M_rowsum = self.M.sum(axis=0)

    def is_finite(self, delta: SVIUpdate) -> bool:
        """Reject NaN/inf statistics before they reach ``lambda``."""
        return bool(np.isfinite(SVIUpdate(*delta).sstats).all())

    def pull(self, request: np.ndarray | None) -> SVIParams:
        """``(lambda[words], lambda.sum(axis=0))`` for the requested words."""
        if request is None:
            lam_rows = self.eta + self.scale * self.M
        else:
            words = self._word_ids(request, "a pull")
            lam_rows = np.empty((len(words), self.M.shape[1]))
            gather_rows_affine(self.M, words, self.eta, self.scale, lam_rows)
        rowsums = self.eta * self.n_features + self.scale * self.M_rowsum
        return SVIParams(lam_rows, rowsums)

    def progress(self) -> dict[str, Any]:
        """The bounds reported with the applied updates (see the attributes)."""
        return {"bound_sum": self.bound_sum, "bound_tokens": self.bound_tokens,
                "bound_updates": self.bound_updates}

    def snapshot(self) -> dict[str, Any]:
        """The dense ``lambda`` (word-major) and the internal state (``state``: what
        the constructor's ``state`` takes back)."""
        return {"lambda": self.eta + self.scale * self.M,
                "state": {"M": self.M.copy(), "scale": np.array(self.scale),
                        "M_rowsum": self.M_rowsum.copy()}}

    def nbytes(self, obj: Any) -> int:
        """Bytes of arrays in an update or payload."""
        return _payload_nbytes(obj)


class AddRule:
    """A flat parameter vector to which updates are added (``theta += delta``).

    Used by the actor-critic, whose workers push already-scaled optimiser steps.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
        Initial parameters.
    """

    def __init__(self, theta: np.ndarray) -> None:
        self.theta = np.array(theta, dtype=np.float64)

    def apply(self, delta: np.ndarray, step: int) -> None:
        """``theta += delta``."""
        self.theta += delta

    def is_finite(self, delta: np.ndarray) -> bool:
        """Reject NaN/inf steps."""
        return bool(np.isfinite(delta).all())

    def pull(self, request: Any = None) -> np.ndarray:
        """A copy of ``theta``."""
        return self.theta.copy()

    def snapshot(self) -> dict[str, np.ndarray]:
        """``{"theta": theta}``."""
        return {"theta": self.theta.copy()}

    def nbytes(self, obj: Any) -> int:
        """Bytes of arrays in an update or payload."""
        return _payload_nbytes(obj)


def _merge_moments(mean: np.ndarray, var: np.ndarray, count: float,
                   batch: tuple[np.ndarray, np.ndarray, float] | None) -> float:
    """Merge ``batch = (mean, var, count)`` into the running ``mean`` / ``var`` (in
    place); the new count."""
    if batch is None or not batch[2] > 0:
        return count
    b_mean, b_var, b_count = batch
    return float(running_mean_std_merge(
        mean, var, float(count), np.ascontiguousarray(b_mean, dtype=np.float64),
        np.ascontiguousarray(b_var, dtype=np.float64), float(b_count)))


class A2CRule:
    """Actor-critic parameters plus what the agent's workers report with each push.

    An update is an :class:`A2CUpdate`; its observation moments and discounted-return
    moments are merged into the global running moments with the parallel-variance
    formula (Chan et al., 1979), as SB3's ``RunningMeanStd`` (``VecNormalize``'s
    ``obs_rms`` and ``ret_rms``). A pull returns an :class:`A2CParams`.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
    obs_dim : int
    total_timesteps : int
        Training budget in environment steps, summed over workers.
    target_return : float or None
        Training is done once the mean return of the last 100 episodes reaches it.
    """

    def __init__(self, theta: np.ndarray, obs_dim: int, total_timesteps: int,
                 target_return: float | None = None,
                 snapshot: dict[str, Any] | None = None) -> None:
        self.theta = np.array(theta, dtype=np.float64)
        self.total_timesteps = int(total_timesteps)
        self.target_return = target_return
        self.stop_requested = False
        self._recent: list[float] = []
        self._recent_len: list[float] = []
        self.train_stats = np.full(4, np.nan)  # of the last push that carried them
        self.total_steps = 0
        self.episodes: list[np.ndarray] = []
        self.obs_mean = np.zeros(obs_dim)
        self.obs_var = np.ones(obs_dim)
        self.obs_count = 1e-4  # SB3 RunningMeanStd's epsilon prior count
        self.ret_mean = np.zeros(1)
        self.ret_var = np.ones(1)
        self.ret_count = 1e-4
        if snapshot is not None:
            # Continue another server's run (a checkpoint: this rule's snapshot()).
            self.total_steps = int(snapshot["total_steps"])
            done = np.asarray(snapshot["episodes"], dtype=np.float64).reshape(-1, 3)
            if len(done):
                self.episodes.append(done)
                self._recent = done[-100:, 1].tolist()
                self._recent_len = done[-100:, 2].tolist()
            self.obs_mean = np.array(snapshot["obs_mean"], dtype=np.float64)
            self.obs_var = np.array(snapshot["obs_var"], dtype=np.float64)
            self.obs_count = float(snapshot["obs_count"])
            if "ret_var" in snapshot:  # absent from checkpoints before reward scaling
                self.ret_mean = np.array(snapshot["ret_mean"], dtype=np.float64)
                self.ret_var = np.array(snapshot["ret_var"], dtype=np.float64)
                self.ret_count = float(snapshot["ret_count"])

    def apply(self, delta: A2CUpdate, step: int) -> None:
        """``theta += delta.theta``; count steps; log episodes; merge moments."""
        delta = A2CUpdate(*delta)
        self.theta += delta.theta
        self.total_steps += int(delta.steps)
        if len(delta.episodes):
            # A copy: the server keeps no reference to an applied push (ParameterServer).
            done = np.array(delta.episodes, dtype=np.float64)
            self.episodes.append(done)
            self._recent = (self._recent + done[:, 1].tolist())[-100:]
            self._recent_len = (self._recent_len + done[:, 2].tolist())[-100:]
        if delta.train_stats is not None:
            self.train_stats = np.array(delta.train_stats, dtype=np.float64)
        self.obs_count = _merge_moments(self.obs_mean, self.obs_var, self.obs_count,
                                        delta.obs_moments)
        self.ret_count = _merge_moments(self.ret_mean, self.ret_var, self.ret_count,
                                        delta.return_moments)

    def is_finite(self, delta: A2CUpdate) -> bool:
        """Reject NaN/inf parameter steps or moments."""
        delta = A2CUpdate(*delta)
        ok = bool(np.isfinite(delta.theta).all())
        for moments in (delta.obs_moments, delta.return_moments):
            if moments is not None:
                ok = ok and bool(np.isfinite(moments[0]).all()
                                 and np.isfinite(moments[1]).all())
        return ok

    def request_stop(self) -> None:
        """End training at the workers' next pull (a callback asked for it)."""
        self.stop_requested = True

    @property
    def done(self) -> bool:
        """Budget spent, the last 100 episodes' mean return reached the target, or a
        stop was requested."""
        if self.total_steps >= self.total_timesteps or self.stop_requested:
            return True
        return (self.target_return is not None and len(self._recent) == 100
                and float(np.mean(self._recent)) >= self.target_return)

    def progress(self) -> dict[str, Any]:
        """Steps, episodes, the mean return of the last 100 episodes, and whether
        training is done (:attr:`done`)."""
        n = sum(len(e) for e in self.episodes)
        mean = float(np.mean(self._recent)) if self._recent else float("nan")
        length = float(np.mean(self._recent_len)) if self._recent_len else float("nan")
        return {"total_steps": self.total_steps, "n_episodes": n,
                "mean_return_100": mean, "mean_length_100": length, "done": self.done,
                "policy_loss": float(self.train_stats[0]),
                "entropy_loss": float(self.train_stats[1]),
                "value_loss": float(self.train_stats[2]),
                "explained_variance": float(self.train_stats[3])}

    def pull(self, request: Any = None) -> A2CParams:
        """Parameters, step count, observation moments and the done flag (copies)."""
        return A2CParams(self.theta.copy(), self.total_steps, self.obs_mean.copy(),
                         self.obs_var.copy(), self.done,
                         (float(self.ret_mean[0]), float(self.ret_var[0]),
                          float(self.ret_count)))

    def episode_log(self) -> np.ndarray:
        """All finished episodes so far, rows ``(global step, return, length)``."""
        if not self.episodes:
            return np.empty((0, 3))
        return np.concatenate(self.episodes)

    def snapshot(self) -> dict[str, np.ndarray]:
        """Parameters, observation moments and the episode log."""
        return {"theta": self.theta.copy(), "obs_mean": self.obs_mean.copy(),
                "obs_var": self.obs_var.copy(), "obs_count": np.array(self.obs_count),
                "ret_mean": self.ret_mean.copy(), "ret_var": self.ret_var.copy(),
                "ret_count": np.array(self.ret_count),
                "episodes": self.episode_log(), "total_steps": np.array(self.total_steps)}

    def nbytes(self, obj: Any) -> int:
        """Bytes of arrays in an update or payload."""
        return _payload_nbytes(obj)
