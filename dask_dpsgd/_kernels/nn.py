"""Actor-critic MLP kernels for HSA2C: forward, action sampling and the A2C gradient.

The model is the one stable-baselines3 (SB3) builds for ``A2C("MlpPolicy", env)``: two
separate MLPs on the flattened observation ``s``, a policy net ``pi(a|s; v)`` ending in
``action_net`` and a value net ``V(s; v)`` ending in ``value_net``. ``action_net`` gives
the logits of a Categorical (``Discrete`` actions), the concatenated logits of
independent Categoricals (SB3 ``MultiCategoricalDistribution``: ``MultiDiscrete``
actions, and ``MultiBinary`` ones as groups of two, see below), or the mean ``mu`` of a
diagonal Gaussian (``Box`` actions) whose standard deviation is either a free
state-independent ``log_std`` vector (SB3 ``DiagGaussianDistribution``) or, with
generalized state-dependent exploration (gSDE, Raffin et al. 2022, SB3
``StateDependentNoiseDistribution``), a free ``log_std`` matrix combined with the
policy net's last hidden activations. Paper symbols (docs/design.rst, "HSA2C"): ``v`` is the parameter vector,
stored here as **one flat float64 array** ``theta`` so the parameter server holds,
copies and adds deltas to a single array; ``A_t`` advantages, ``R_t`` returns,
``vf_coef``, ``ent_coef``.

``theta`` is described by a *layout*: a flat tuple of Python ints (picklable, hashable,
usable as a field of a frozen config) made by :func:`make_layout`. Kernels take it as an
int64 array, ``np.asarray(layout, dtype=np.int64)``, so one compiled signature serves
every network depth. Layout format::

    layout[0]  obs_dim          flattened observation size
    layout[1]  n_act_outputs    outputs of action_net: n actions (Discrete), sum of the
                                group sizes (multi-categorical) or action dimension (Box)
    layout[2]  continuous       head: 0 Categorical, 1 diagonal Gaussian, 2
                                multi-categorical, 3 gSDE Gaussian (HEAD_* constants)
    layout[3]  activation       0 tanh, 1 relu (hidden layers of both nets)
    layout[4]  n_params         len(theta)
    layout[5]  log_std offset   first index of log_std in theta, -1 for heads 0 and 2;
                                log_std is a vector of n_act_outputs (head 1) or a
                                row-major (latent_dim, n_act_outputs) matrix (head 3)
    layout[6]  n_pi_layers      hidden layers + head of the policy net
    layout[7]  n_vf_layers      hidden layers + head of the value net
    layout[8]  max_width        widest layer output (delta buffers)
    layout[9]  work_size        workspace length of one chunk (float64)
    layout[10] action_cols      columns of the actions array: 1 (Discrete), G
                                (multi-categorical), action dimension (Box, with or
                                without gSDE); no kernel reads it for heads 0, 1, 3:
                                the callers size the arrays
    layout[11] block            samples processed together per layer (cache blocking)
    layout[12:12 + 5 * (n_pi_layers + n_vf_layers)]
               one record of 5 ints per dense layer, policy net first, then value net:
               (w_off, b_off, n_in, n_out, act_off)
    layout[12 + 5 * (n_pi_layers + n_vf_layers):]
               head 2 only: the G group sizes (n_1, ..., n_G), summing to n_act_outputs;
               empty for the other heads

A dense layer computes ``z = W @ x + b`` with ``W = theta[w_off:w_off + n_out * n_in]
.reshape(n_out, n_in)`` (row-major, torch's ``nn.Linear.weight`` convention, so an SB3
``state_dict`` maps onto ``theta`` by flattening) and
``b = theta[b_off:b_off + n_out]``; ``act_off`` locates its outputs in the workspace
(at ``block * act_off``, one row per sample of the block) for backprop.
``theta`` is ordered: policy hidden layers, ``action_net``, value hidden layers,
``value_net``, ``log_std`` (each layer ``W`` then ``b``); see :func:`param_slices`.

Kernels are plain Python functions compiled once at import, with explicit signatures
(C-contiguous float64 arrays, int64 layout), into ``cache=True, nogil=True`` dispatchers
(docs/design.rst, "Kernels"); the undecorated ``_name`` functions stay importable for
tests. Actions follow SB3's ``RolloutBuffer`` convention: a float64 array of shape
``(n, action_cols)``, the action index stored as a float in column 0 when discrete, and
group ``g``'s index in ``[0, n_g)`` in column ``g`` when multi-categorical.

Policy heads (``layout[2]``), with ``z`` the ``action_net`` output of one sample:

- 0, Categorical: ``pi(a|s) = softmax(z)[a]``.
- 2, multi-categorical: ``z`` is cut into G consecutive groups of ``n_1, ..., n_G``
  logits and ``pi(a|s) = prod_g softmax(z_g)[a_g]``, entropy the sum of the groups'
  entropies. ``MultiBinary(G)`` is passed as ``G`` groups of 2: independent two-way
  Categoricals with logits ``(z_g0, z_g1)`` are the family of SB3's
  ``BernoulliDistribution`` with the logit ``z_g1 - z_g0`` (two logits per bit instead
  of one: same distributions, one redundant parameter per bit).
- 1, diagonal Gaussian: ``a ~ N(mu, diag(exp(log_std))**2)``, ``mu = z``.
- 3, gSDE Gaussian (SB3 defaults ``full_std=True``, ``use_expln=False``,
  ``learn_features=False``, ``squash_output=False``): with ``h`` the policy net's last
  hidden activations (the input of ``action_net``; the observation if there is no
  hidden layer) of size ``latent_dim`` and ``std = exp(log_std)`` of shape
  ``(latent_dim, action_dim)``, ``a ~ N(mu, diag(sigma)**2)`` with ``sigma_k =
  sqrt(sum_j h_j**2 std_jk**2 + 1e-6)``; ``h`` is a constant (detached) in ``sigma``.
  A draw is ``mu + h @ E`` with an exploration matrix ``E ~ N(0, std**2)`` supplied by
  the caller (:func:`sample_exploration`).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import prange

from dask_dpsgd._kernels import parallel_twin

# Activation codes stored in layout[3]; LINEAR is only used internally for heads.
LINEAR = -1
TANH = 0
RELU = 1
ACTIVATIONS = {"tanh": TANH, "relu": RELU}

# Header indices of the layout (see module docstring).
L_OBS_DIM = 0
L_N_OUT = 1
L_CONTINUOUS = 2
L_ACTIVATION = 3
L_N_PARAMS = 4
L_LOG_STD = 5
L_N_PI = 6
L_N_VF = 7
L_MAX_WIDTH = 8
L_WORK_SIZE = 9
L_ACTION_COLS = 10
L_BLOCK = 11
HEADER = 12
REC = 5

# Policy heads stored in layout[2] (see module docstring).
HEAD_CATEGORICAL = 0
HEAD_GAUSSIAN = 1
HEAD_MULTI_CATEGORICAL = 2
HEAD_SDE = 3

# SB3 StateDependentNoiseDistribution's epsilon, added to the gSDE variance.
SDE_EPSILON = 1e-6

# Samples per block: 16 rows of 64 float64 activations (8 kB) plus one weight and one
# gradient row stay in L1 while a layer is processed.
BLOCK = 16

HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)

# Constants of _tanh: Cephes tanh.c P/Q for |x| < 0.625 (Moshier, Cephes Math Library
# 2.8, 2000), ln 2 split for Cody-Waite reduction (fdlibm e_exp.c), 1/n! for exp(r).
_TP0 = -9.64399179425052238628e-1
_TP1 = -9.92877231001918586564e1
_TP2 = -1.61468768441708447952e3
_TQ0 = 1.12811678491632931402e2
_TQ1 = 2.23548839060100448583e3
_TQ2 = 4.84406305325125486048e3
_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_INV_LN2 = 1.44269504088896338700e00
(_E2, _E3, _E4, _E5, _E6, _E7, _E8, _E9, _E10, _E11, _E12, _E13) = (
    1.0 / math.factorial(n) for n in range(2, 14)
)

# SB3 ActorCriticPolicy orthogonal-init gains: sqrt(2) for hidden layers of the MLP
# extractor, 0.01 for action_net (near-uniform initial policy), 1 for value_net.
GAIN_HIDDEN = math.sqrt(2.0)
GAIN_POLICY = 0.01
GAIN_VALUE = 1.0

_F1 = "float64[::1]"
_F2 = "float64[:, ::1]"
_I1 = "int64[::1]"


def make_layout(
    obs_dim: int,
    n_act_outputs: int,
    hidden: tuple[int, ...] = (64, 64),
    continuous: bool = False,
    *,
    activation: str = "tanh",
    hidden_vf: tuple[int, ...] | None = None,
    action_groups: tuple[int, ...] | None = None,
    sde: bool = False,
) -> tuple[int, ...]:
    """Describe the flat parameter vector ``theta`` of a policy net and a value net.

    Parameters
    ----------
    obs_dim : int
        Size of the flattened observation ``s``.
    n_act_outputs : int
        Outputs of ``action_net``: number of actions (Discrete), ``sum(action_groups)``
        (multi-categorical) or action dimension (Box).
    hidden : tuple of int, default=(64, 64)
        Hidden layer widths of the policy net (SB3 ``net_arch["pi"]``), and of the value
        net unless ``hidden_vf`` is given. May be empty (linear heads).
    continuous : bool, default=False
        Gaussian head (Box actions) instead of a Categorical one.
    activation : {"tanh", "relu"}, default="tanh"
        Hidden activation of both nets (SB3 default ``nn.Tanh``).
    hidden_vf : tuple of int or None, default=None
        Hidden widths of the value net (SB3 ``net_arch["vf"]``); ``None`` means
        ``hidden``.
    action_groups : tuple of int or None, default=None
        Group sizes ``(n_1, ..., n_G)``, each ``>= 1``, of a multi-categorical head
        (SB3 ``MultiCategoricalDistribution``): ``MultiDiscrete(nvec)`` passes
        ``nvec``, ``MultiBinary(G)`` passes ``(2,) * G``. Needs ``continuous=False``
        and ``n_act_outputs == sum(action_groups)``. ``None``: a single Categorical.
    sde : bool, default=False
        Generalized state-dependent exploration (SB3 ``use_sde=True``): the Gaussian's
        ``log_std`` is a ``(latent_dim, n_act_outputs)`` matrix, ``latent_dim`` the
        last hidden width of the policy net (``obs_dim`` without hidden layers). Needs
        ``continuous=True``.

    Returns
    -------
    layout : tuple of int
        Format in the module docstring; kernels take ``np.asarray(layout, np.int64)``.
        ``action_groups=None, sde=False`` gives the same tuple as before these
        options existed (checkpoints fingerprint it).

    Raises
    ------
    ValueError
        Unknown activation, non-positive sizes, a Discrete head with fewer than two
        actions, ``action_groups`` that are not positive ints, do not sum to
        ``n_act_outputs`` or come with ``continuous=True``, or ``sde=True`` without
        ``continuous=True``.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
        )
    hidden = tuple(int(h) for h in hidden)
    hidden_vf = hidden if hidden_vf is None else tuple(int(h) for h in hidden_vf)
    if obs_dim < 1 or n_act_outputs < 1 or any(h < 1 for h in hidden + hidden_vf):
        raise ValueError("obs_dim, n_act_outputs and hidden widths must be >= 1")
    if sde and not continuous:
        raise ValueError(
            "sde=True (gSDE) is a Gaussian head for Box actions: it needs "
            "continuous=True"
        )
    groups: tuple[int, ...] = ()
    if action_groups is not None:
        if continuous:
            raise ValueError(
                "action_groups (a multi-categorical head) needs continuous=False"
            )
        groups = tuple(action_groups)
        if not groups or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1
            for v in groups
        ):
            raise ValueError(
                "action_groups must be a non-empty tuple of positive ints (group "
                f"sizes), got {action_groups!r}"
            )
        groups = tuple(int(v) for v in groups)
        if sum(groups) != n_act_outputs:
            raise ValueError(
                f"n_act_outputs={n_act_outputs} must equal sum(action_groups)="
                f"{sum(groups)} (the policy head outputs every group's logits)"
            )
    elif not continuous and n_act_outputs < 2:
        raise ValueError("a Discrete action space needs n_act_outputs >= 2")
    records: list[int] = []
    off = 0
    act_off = 0
    for widths in ((*hidden, n_act_outputs), (*hidden_vf, 1)):
        n_in = obs_dim
        for n_out in widths:
            records += [off, off + n_out * n_in, n_in, n_out, act_off]
            off += n_out * n_in + n_out
            act_off += n_out
            n_in = n_out
    log_std_off = -1
    max_width = max((*hidden, *hidden_vf, n_act_outputs, 1))
    # Workspace: every layer's outputs for a block, then two delta buffers; gSDE puts
    # exp(2 log_std) (latent_dim * action_dim) between the two.
    work_size = BLOCK * (act_off + 2 * max_width)
    head = HEAD_CATEGORICAL
    action_cols = 1
    if continuous:
        head = HEAD_GAUSSIAN
        action_cols = int(n_act_outputs)
        log_std_off = off
        n_log_std = n_act_outputs
        if sde:
            head = HEAD_SDE
            n_log_std = (hidden[-1] if hidden else int(obs_dim)) * n_act_outputs
            work_size += n_log_std
        off += n_log_std
    elif groups:
        head = HEAD_MULTI_CATEGORICAL
        action_cols = len(groups)
    header = [
        int(obs_dim),
        int(n_act_outputs),
        head,
        ACTIVATIONS[activation],
        off,
        log_std_off,
        len(hidden) + 1,
        len(hidden_vf) + 1,
        max_width,
        work_size,
        action_cols,
        BLOCK,
    ]
    return tuple(header + records + list(groups))


def sde_latent_dim(layout) -> int:
    """Size of the gSDE latent ``h``: the input width of ``action_net``.

    Parameters
    ----------
    layout : tuple of int or ndarray of int64
        From :func:`make_layout` (any head; meaningful for gSDE).

    Returns
    -------
    int
        ``latent_dim``: the policy net's last hidden width, or ``obs_dim`` when it has
        no hidden layer; the gSDE ``log_std`` has shape ``(latent_dim, action_dim)``.
    """
    return int(layout[HEADER + REC * (int(layout[L_N_PI]) - 1) + 2])


def group_sizes(layout) -> tuple[int, ...]:
    """Group sizes ``(n_1, ..., n_G)`` of a multi-categorical head.

    Parameters
    ----------
    layout : tuple of int or ndarray of int64
        From :func:`make_layout`.

    Returns
    -------
    tuple of int
        The ``action_groups`` given to :func:`make_layout`; empty for the other heads.
    """
    start = HEADER + REC * (int(layout[L_N_PI]) + int(layout[L_N_VF]))
    return tuple(int(v) for v in layout[start:])


def noise_cols(layout) -> int:
    """Columns of the ``noise`` array of :func:`policy_act` / :func:`policy_act_value`.

    Parameters
    ----------
    layout : tuple of int or ndarray of int64
        From :func:`make_layout`.

    Returns
    -------
    int
        1 (Categorical: one uniform), ``action_dim`` (Gaussian: standard normals),
        ``G`` (multi-categorical: one uniform per group) or ``latent_dim *
        action_dim`` (gSDE: a flattened exploration matrix ``E``).
    """
    head = int(layout[L_CONTINUOUS])
    if head == HEAD_SDE:
        return sde_latent_dim(layout) * int(layout[L_N_OUT])
    if head == HEAD_GAUSSIAN:
        return int(layout[L_N_OUT])
    return int(layout[L_ACTION_COLS])


def sample_exploration(
    theta: np.ndarray, layout, rng: np.random.Generator, n: int
) -> np.ndarray:
    """Draw ``n`` gSDE exploration matrices ``E ~ N(0, exp(log_std)**2)``.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
        Parameters (for the ``log_std`` matrix).
    layout : tuple of int or ndarray of int64
        A gSDE layout (``make_layout(..., continuous=True, sde=True)``).
    rng : numpy.random.Generator
        Source of the standard normals.
    n : int
        Number of matrices (e.g. one per environment).

    Returns
    -------
    ndarray of float64, shape (n, latent_dim * action_dim)
        Row ``i`` is the row-major flattened ``E_i = exp(log_std) * Z_i``, ``Z_i`` of
        ``rng.standard_normal((n, latent_dim, action_dim))``: the ``noise`` argument of
        :func:`policy_act` / :func:`policy_act_value`, giving the action ``mu(s) + h(s)
        @ E_i`` (SB3 ``StateDependentNoiseDistribution.sample_weights`` with
        ``batch_size=n``, then ``get_noise``). Keep a row for several steps to explore
        with a fixed ``E`` (SB3 ``sde_sample_freq``).

    Raises
    ------
    ValueError
        If ``layout`` is not a gSDE layout.
    """
    if int(layout[L_CONTINUOUS]) != HEAD_SDE:
        raise ValueError("sample_exploration needs a gSDE layout (sde=True)")
    lat = sde_latent_dim(layout)
    k_out = int(layout[L_N_OUT])
    s = int(layout[L_LOG_STD])
    std = np.exp(theta[s : s + lat * k_out]).reshape(lat, k_out)
    e = std * rng.standard_normal((n, lat, k_out))
    return np.ascontiguousarray(e.reshape(n, lat * k_out), dtype=np.float64)


def param_slices(layout) -> list[tuple[str, slice, tuple[int, ...]]]:
    """Name, slice of ``theta`` and shape of every parameter tensor.

    Parameters
    ----------
    layout : tuple of int or ndarray of int64
        From :func:`make_layout`.

    Returns
    -------
    list of (str, slice, tuple of int)
        Names ``pi.{l}.weight``/``pi.{l}.bias`` (policy hidden layer ``l``),
        ``action_net.*``, ``vf.{l}.*``, ``value_net.*`` and ``log_std`` (SB3's names for
        the heads and ``log_std``); weights have shape ``(n_out, n_in)``, ``log_std``
        ``(action_dim,)`` or, with gSDE, ``(latent_dim, action_dim)``.
    """
    lay = [int(x) for x in layout]
    n_pi, n_vf = lay[L_N_PI], lay[L_N_VF]
    out = []
    for li in range(n_pi + n_vf):
        w_off, b_off, n_in, n_out, _ = lay[HEADER + REC * li : HEADER + REC * (li + 1)]
        if li == n_pi - 1:
            name = "action_net"
        elif li == n_pi + n_vf - 1:
            name = "value_net"
        elif li < n_pi:
            name = f"pi.{li}"
        else:
            name = f"vf.{li - n_pi}"
        out.append((f"{name}.weight", slice(w_off, b_off), (n_out, n_in)))
        out.append((f"{name}.bias", slice(b_off, b_off + n_out), (n_out,)))
    s = lay[L_LOG_STD]
    if lay[L_CONTINUOUS] == HEAD_GAUSSIAN:
        out.append(("log_std", slice(s, s + lay[L_N_OUT]), (lay[L_N_OUT],)))
    elif lay[L_CONTINUOUS] == HEAD_SDE:
        shape = (sde_latent_dim(lay), lay[L_N_OUT])
        out.append(("log_std", slice(s, s + shape[0] * shape[1]), shape))
    return out


def n_params(layout) -> int:
    """Length of ``theta`` for ``layout``.

    Parameters
    ----------
    layout : tuple of int or ndarray of int64
        From :func:`make_layout`.

    Returns
    -------
    int
        ``layout[4]``.
    """
    return int(layout[L_N_PARAMS])


def _orthogonal(
    rng: np.random.Generator, n_out: int, n_in: int, gain: float
) -> np.ndarray:
    """Orthogonal matrix of shape ``(n_out, n_in)`` scaled by ``gain``.

    Equivalent to ``torch.nn.init.orthogonal_(torch.empty(n_out, n_in), gain)`` in
    distribution (QR of a Gaussian matrix with the sign of ``diag(R)`` fixed, Saxe et
    al. 2014), drawing from ``rng`` instead of torch's generator.
    """
    flat = rng.standard_normal((n_out, n_in))
    if n_out < n_in:
        flat = flat.T
    q, r = np.linalg.qr(flat)
    q *= np.sign(np.diag(r))
    if n_out < n_in:
        q = q.T
    return gain * q


def init_params(
    layout, rng: np.random.Generator, *, log_std_init: float = 0.0,
    ortho_init: bool = True,
) -> np.ndarray:
    """Draw an initial ``theta`` as SB3's ``ActorCriticPolicy`` does.

    Parameters
    ----------
    layout : tuple of int or ndarray of int64
        From :func:`make_layout`.
    rng : numpy.random.Generator
        Source of the random weights.
    log_std_init : float, default=0.0
        Initial ``log_std`` of a Gaussian policy (SB3 default 0.0), every entry of the
        matrix with gSDE (SB3 ``th.ones(latent_sde_dim, action_dim) * log_std_init``).
    ortho_init : bool, default=True
        SB3's ``ortho_init``: orthogonal weights (gain ``sqrt(2)`` hidden, 0.01
        ``action_net``, 1.0 ``value_net``) and zero biases. ``False``: PyTorch's
        default ``nn.Linear`` initialisation, every weight and bias drawn from
        ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (``kaiming_uniform_(a=sqrt(5))``).

    Returns
    -------
    theta : ndarray of float64, shape (n_params,)
        The parameters, ``log_std = log_std_init``.
    """
    theta = np.zeros(n_params(layout), dtype=np.float64)
    bound = 0.0  # 1/sqrt(fan_in) of the last weight matrix, for its bias
    for name, sl, shape in param_slices(layout):
        if name.endswith(".weight"):
            if not ortho_init:
                bound = 1.0 / np.sqrt(shape[1])
                theta[sl] = rng.uniform(-bound, bound, sl.stop - sl.start)
                continue
            gain = GAIN_HIDDEN
            if name.startswith("action_net"):
                gain = GAIN_POLICY
            elif name.startswith("value_net"):
                gain = GAIN_VALUE
            theta[sl] = _orthogonal(rng, shape[0], shape[1], gain).ravel()
        elif name.endswith(".bias") and not ortho_init:
            theta[sl] = rng.uniform(-bound, bound, sl.stop - sl.start)
        elif name == "log_std":
            theta[sl] = log_std_init
    return theta


def make_grad_workspace(layout, n_chunks: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Allocate the workspace of :func:`a2c_loss_grad` / :func:`a2c_loss_grad_parallel`.

    Parameters
    ----------
    layout : tuple of int or ndarray of int64
        From :func:`make_layout`.
    n_chunks : int, default=1
        Number of batch chunks, each with a private gradient slab. For the parallel
        variant use ``numba.get_num_threads()`` (or a multiple, for load balance).

    Returns
    -------
    grad_slabs : ndarray of float64, shape (n_chunks, n_params)
    work : ndarray of float64, shape (n_chunks, work_size)
    """
    return (
        np.zeros((n_chunks, n_params(layout)), dtype=np.float64),
        np.zeros((n_chunks, int(layout[L_WORK_SIZE])), dtype=np.float64),
    )


# A *block* is up to ``layout[11]`` consecutive samples processed together, layer by
# layer: each weight row and gradient row is then loaded once per block (and feeds four
# samples per pass) instead of once per sample. Per-sample backprop re-read theta and
# the gradient (73 kB each on SB3's 64-64 net, more than L1) for every sample; blocking
# and unrolling halved the gradient's time (5.7 -> 2.8 us/sample, relu, this machine).
# Workspace ``w`` of one block: for every layer, its outputs as a row-major
# (block, n_out) matrix at ``block * act_off``; then two delta buffers of
# ``block * max_width``.


def _tanh(x):
    """Hyperbolic tangent in straight-line arithmetic, so loops over it vectorise.

    Parameters
    ----------
    x : float

    Returns
    -------
    float
        Equivalent to ``np.tanh(x)`` within 4 ulp (measured over [-25, 25]; NaN
        propagates). libm's ``tanh`` is a scalar call that blocks SIMD and was ~60% of
        the forward pass of SB3's 64-64 tanh net.

    Notes
    -----
    ``|x| < 0.625``: Cephes ``tanh.c`` rational form ``x + x z P(z) / Q(z)``,
    ``z = x**2``.
    Otherwise ``1 - 2 / (exp(2|x|) + 1)`` (no cancellation there, ``tanh > 0.55``) with
    ``exp(y) = 2**k exp(r)``: Cody-Waite reduction ``r = y - k ln2`` (``|r| <= ln2/2``),
    degree-13 Taylor polynomial for ``exp(r)`` (truncation < 1e-17) and ``2**k`` built
    from six compare-and-multiply steps; ``|x|`` is capped at 20, where ``tanh`` is 1
    in float64. Compiled without ``reassoc``, which would break the reduction.
    """
    a = abs(x)
    z = a * a
    num = (_TP0 * z + _TP1) * z + _TP2
    den = ((z + _TQ0) * z + _TQ1) * z + _TQ2
    small = a + a * z * num / den
    y = 2.0 * min(a, 20.0)
    k = math.floor(y * _INV_LN2 + 0.5)
    r = (y - k * _LN2_HI) - k * _LN2_LO
    # Horner: exp(r) = sum_{n <= 13} r**n / n!
    p = _E12 + r * _E13
    p = _E11 + r * p
    p = _E10 + r * p
    p = _E9 + r * p
    p = _E8 + r * p
    p = _E7 + r * p
    p = _E6 + r * p
    p = _E5 + r * p
    p = _E4 + r * p
    p = _E3 + r * p
    p = _E2 + r * p
    p = 1.0 + r * p
    p = 1.0 + r * p
    # 2**k for integer-valued 0 <= k <= 58 with float compares only (no int casts).
    two_k = 1.0
    if k >= 32.0:
        two_k *= 4294967296.0
        k -= 32.0
    if k >= 16.0:
        two_k *= 65536.0
        k -= 16.0
    if k >= 8.0:
        two_k *= 256.0
        k -= 8.0
    if k >= 4.0:
        two_k *= 16.0
        k -= 4.0
    if k >= 2.0:
        two_k *= 4.0
        k -= 2.0
    if k >= 1.0:
        two_k *= 2.0
    large = 1.0 - 2.0 / (p * two_k + 1.0)
    t = small if a < 0.625 else large
    return math.copysign(t, x) if a == a else x


# inline="always" (numba IR inlining) lets LLVM vectorise the loop that calls it;
# error_model="numpy" drops the ZeroDivisionError branch that blocks vectorisation.
_tanh_jit = numba.njit(cache=True, nogil=True, inline="always", error_model="numpy")(
    _tanh
)


def _activate(out, act):
    """Apply the hidden activation in place.

    Parameters
    ----------
    out : ndarray of float64, 1-D
        Pre-activations, overwritten.
    act : int
        ``TANH`` or ``RELU`` (anything else leaves ``out`` unchanged).

    Notes
    -----
    Equivalent to ``out[:] = np.tanh(out)`` (to 4 ulp) or ``np.maximum(out, 0)``.
    """
    if act == TANH:
        for k in range(out.shape[0]):
            out[k] = _tanh_jit(out[k])
    elif act == RELU:
        for k in range(out.shape[0]):
            out[k] = max(out[k], 0.0)


_activate_jit = numba.njit(cache=True, nogil=True, error_model="numpy")(_activate)

# Reductions (dot products) may be reassociated so LLVM vectorises them; no nnan/ninf
# flags, so non-finite values still propagate as in IEEE arithmetic.
_FASTMATH = {"reassoc", "contract", "nsz"}


def _dense_block(theta, w_off, b_off, n_in, n_out, src, src_off, m, dst, dst_off, act):
    """One dense layer for a block of ``m`` samples.

    Parameters
    ----------
    theta : ndarray of float64
        Flat parameters.
    w_off, b_off, n_in, n_out : int
        Layer record (see module docstring).
    src : ndarray of float64, 1-D
        Inputs: row ``s`` is ``src[src_off + s * n_in:src_off + (s + 1) * n_in]``.
    src_off, m : int
        Offset of the block's first input row; number of samples.
    dst : ndarray of float64, 1-D
        Outputs, row-major ``(m, n_out)`` at ``dst_off`` (may be ``src``'s array, in a
        disjoint region).
    dst_off : int
        Offset of the output block.
    act : int
        ``LINEAR``, ``TANH`` or ``RELU``.

    Notes
    -----
    Equivalent to ``dst[...] = act(src[...].reshape(m, n_in) @ W.T + b).ravel()``.
    """
    for j in range(n_out):
        wr = theta[w_off + j * n_in : w_off + (j + 1) * n_in]
        bj = theta[b_off + j]
        s = 0
        # Four samples per pass: each weight load feeds four dot products.
        while s + 4 <= m:
            x0 = src[src_off + s * n_in : src_off + (s + 1) * n_in]
            x1 = src[src_off + (s + 1) * n_in : src_off + (s + 2) * n_in]
            x2 = src[src_off + (s + 2) * n_in : src_off + (s + 3) * n_in]
            x3 = src[src_off + (s + 3) * n_in : src_off + (s + 4) * n_in]
            acc0 = 0.0
            acc1 = 0.0
            acc2 = 0.0
            acc3 = 0.0
            for i in range(n_in):
                wi = wr[i]
                acc0 += wi * x0[i]
                acc1 += wi * x1[i]
                acc2 += wi * x2[i]
                acc3 += wi * x3[i]
            dst[dst_off + s * n_out + j] = acc0 + bj
            dst[dst_off + (s + 1) * n_out + j] = acc1 + bj
            dst[dst_off + (s + 2) * n_out + j] = acc2 + bj
            dst[dst_off + (s + 3) * n_out + j] = acc3 + bj
            s += 4
        while s < m:
            x = src[src_off + s * n_in : src_off + (s + 1) * n_in]
            acc = 0.0
            for i in range(n_in):
                acc += wr[i] * x[i]
            dst[dst_off + s * n_out + j] = acc + bj
            s += 1
    _activate_jit(dst[dst_off : dst_off + m * n_out], act)


_dense_block_jit = numba.njit(
    cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy"
)(_dense_block)


def _mlp_forward(theta, layout, first, n_layers, x, x_off, m, w):
    """Forward a block through the net whose records are ``first..first+n_layers-1``.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
    layout : ndarray of int64
    first, n_layers : int
        0, ``layout[6]`` for the policy net; ``layout[6]``, ``layout[7]`` for the value
        net.
    x : ndarray of float64, 1-D
        Flattened observations ``s``; the block's rows start at ``x_off``.
    x_off, m : int
        Offset of the first observation; block size (``<= layout[11]``).
    w : ndarray of float64, shape (work_size,)
        Workspace; every layer's outputs are left at ``block * act_off``.

    Returns
    -------
    int
        Offset in ``w`` of the head's ``(m, n_out)`` outputs (logits, Gaussian means,
        or ``V(s)``).
    """
    act = layout[L_ACTIVATION]
    blk = layout[L_BLOCK]
    r = HEADER + REC * first
    # Layer 0 reads the observations, later layers the previous layer's outputs in w.
    code = act if n_layers > 1 else LINEAR
    _dense_block_jit(
        theta,
        layout[r],
        layout[r + 1],
        layout[r + 2],
        layout[r + 3],
        x,
        x_off,
        m,
        w,
        blk * layout[r + 4],
        code,
    )
    for li in range(1, n_layers):
        r = HEADER + REC * (first + li)
        code = act if li < n_layers - 1 else LINEAR
        _dense_block_jit(
            theta,
            layout[r],
            layout[r + 1],
            layout[r + 2],
            layout[r + 3],
            w,
            blk * layout[r - REC + 4],
            m,
            w,
            blk * layout[r + 4],
            code,
        )
    return blk * layout[HEADER + REC * (first + n_layers - 1) + 4]


_mlp_forward_jit = numba.njit(cache=True, nogil=True)(_mlp_forward)


def _mlp_backward(theta, layout, first, n_layers, x, x_off, m, w, d_cur, d_other, g):
    """Backprop a block's head gradients through a net, accumulating into ``g``.

    Parameters
    ----------
    theta, layout, first, n_layers, x, x_off, m, w
        As in ``_mlp_forward``, which must have run on the same block and ``w``.
    d_cur, d_other : int
        Offsets in ``w`` of the two delta buffers; on entry ``w[d_cur:]`` holds the
        head's ``dL/dz`` as a row-major ``(m, n_out_head)`` matrix. Both are clobbered.
    g : ndarray of float64, shape (n_params,)
        Gradient accumulator; ``dL/dW`` and ``dL/db`` of every layer are added to it.

    Notes
    -----
    Equivalent, layer by layer from the head down, to ``g[W] += dZ.T @ A_in``,
    ``g[b] += dZ.sum(0)`` and ``dZ_prev = (dZ @ W) * act'(A_in)`` with
    ``act'(h) = 1 - h**2`` (tanh) or ``h > 0`` (relu, torch's convention at 0).
    """
    act = layout[L_ACTIVATION]
    blk = layout[L_BLOCK]
    for li in range(n_layers - 1, -1, -1):
        r = HEADER + REC * (first + li)
        w_off = layout[r]
        b_off = layout[r + 1]
        n_in = layout[r + 2]
        n_out = layout[r + 3]
        if li == 0:
            src = x
            s_off = x_off
        else:
            src = w
            s_off = blk * layout[r - REC + 4]
            da_all = w[d_other : d_other + m * n_in]
            for k in range(m * n_in):
                da_all[k] = 0.0
        for j in range(n_out):
            row = w_off + j * n_in
            gr = g[row : row + n_in]
            gb = 0.0
            s = 0
            # dL/dW[j, :] += sum_s dz[s, j] * a_in[s, :], four samples per pass so each
            # load/store of the gradient row feeds four FMAs.
            while s + 4 <= m:
                dz0 = w[d_cur + s * n_out + j]
                dz1 = w[d_cur + (s + 1) * n_out + j]
                dz2 = w[d_cur + (s + 2) * n_out + j]
                dz3 = w[d_cur + (s + 3) * n_out + j]
                a0 = src[s_off + s * n_in : s_off + (s + 1) * n_in]
                a1 = src[s_off + (s + 1) * n_in : s_off + (s + 2) * n_in]
                a2 = src[s_off + (s + 2) * n_in : s_off + (s + 3) * n_in]
                a3 = src[s_off + (s + 3) * n_in : s_off + (s + 4) * n_in]
                for i in range(n_in):
                    gr[i] += dz0 * a0[i] + dz1 * a1[i] + dz2 * a2[i] + dz3 * a3[i]
                gb += dz0 + dz1 + dz2 + dz3
                s += 4
            while s < m:
                dz = w[d_cur + s * n_out + j]
                a_in = src[s_off + s * n_in : s_off + (s + 1) * n_in]
                for i in range(n_in):
                    gr[i] += dz * a_in[i]
                gb += dz
                s += 1
            g[b_off + j] += gb
        if li > 0:
            # dL/da_in[s, :] = sum_j dz[s, j] W[j, :], four weight rows per pass.
            for s in range(m):
                da = w[d_other + s * n_in : d_other + (s + 1) * n_in]
                dzs = w[d_cur + s * n_out : d_cur + (s + 1) * n_out]
                j = 0
                while j + 4 <= n_out:
                    r0 = w_off + j * n_in
                    w0 = theta[r0 : r0 + n_in]
                    w1 = theta[r0 + n_in : r0 + 2 * n_in]
                    w2 = theta[r0 + 2 * n_in : r0 + 3 * n_in]
                    w3 = theta[r0 + 3 * n_in : r0 + 4 * n_in]
                    z0 = dzs[j]
                    z1 = dzs[j + 1]
                    z2 = dzs[j + 2]
                    z3 = dzs[j + 3]
                    for i in range(n_in):
                        da[i] += z0 * w0[i] + z1 * w1[i] + z2 * w2[i] + z3 * w3[i]
                    j += 4
                while j < n_out:
                    wr = theta[w_off + j * n_in : w_off + (j + 1) * n_in]
                    z0 = dzs[j]
                    for i in range(n_in):
                        da[i] += z0 * wr[i]
                    j += 1
        if li > 0:
            h_all = src[s_off : s_off + m * n_in]
            for k in range(m * n_in):
                h = h_all[k]
                if act == TANH:
                    da_all[k] *= 1.0 - h * h
                elif h <= 0.0:
                    da_all[k] = 0.0
            d_cur, d_other = d_other, d_cur


_mlp_backward_jit = numba.njit(
    cache=True, nogil=True, fastmath=_FASTMATH, error_model="numpy"
)(_mlp_backward)


def _logsumexp(w, off, k_out):
    """Log-sum-exp of ``k_out`` logits, shifted by their max for stability.

    Parameters
    ----------
    w : ndarray of float64, 1-D
        Buffer holding the logits at ``w[off:off + k_out]``.
    off, k_out : int
        Offset and count.

    Returns
    -------
    float
        Equivalent to ``scipy.special.logsumexp(w[off:off + k_out])``.
    """
    mx = w[off]
    for k in range(1, k_out):
        mx = max(mx, w[off + k])
    s = 0.0
    for k in range(k_out):
        s += math.exp(w[off + k] - mx)
    return mx + math.log(s)


_logsumexp_jit = numba.njit(cache=True, nogil=True)(_logsumexp)


def _multi_cat_head_grad(layout, w, hs, ds, a_row, adv, ent_coef, scale):
    """Log-prob, entropy and head gradient of one sample, multi-categorical head.

    Parameters
    ----------
    layout : ndarray of int64
        A multi-categorical layout (``layout[2] == 2``).
    w : ndarray of float64, 1-D
        Workspace: logits ``z`` at ``w[hs:hs + n_act_outputs]``, group after group;
        ``dL/dz`` is written at ``w[ds:ds + n_act_outputs]``.
    hs, ds : int
        Offsets of the logits and of their gradient.
    a_row : ndarray of float64, shape (G,)
        The action: group ``g``'s index in column ``g``.
    adv, ent_coef, scale : float
        ``A_t``, ``ent_coef`` and ``1 / n``.

    Returns
    -------
    logp, ent : float
        ``log pi(a|s) = sum_g log softmax(z_g)[a_g]`` and ``H = sum_g H_g``.

    Notes
    -----
    Per group, the Categorical formula of ``_block_loss_grad`` with the group's own
    entropy: ``dL/dz_gk = scale (-A (1[k=a_g] - p_gk) + ent_coef p_gk (log p_gk +
    H_g))`` (SB3 ``MultiCategoricalDistribution``).
    """
    n_groups = layout[L_ACTION_COLS]
    gbase = HEADER + REC * (layout[L_N_PI] + layout[L_N_VF])
    logp = 0.0
    ent = 0.0
    off = 0
    for gi in range(n_groups):
        ng = layout[gbase + gi]
        o = hs + off
        lse = _logsumexp_jit(w, o, ng)
        h = 0.0
        for k in range(ng):
            lp = w[o + k] - lse
            h -= math.exp(lp) * lp
        a = int(a_row[gi])
        logp += w[o + a] - lse
        for k in range(ng):
            lp = w[o + k] - lse
            p = math.exp(lp)
            ind = 1.0 if k == a else 0.0
            w[ds + off + k] = scale * (-adv * (ind - p) + ent_coef * p * (lp + h))
        ent += h
        off += ng
    return logp, ent


_multi_cat_head_grad_jit = numba.njit(cache=True, nogil=True)(_multi_cat_head_grad)


def _sde_std_sq(theta, layout, w, sq):
    """Write ``std**2 = exp(2 log_std)`` of a gSDE head into ``w[sq:]``.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
    layout : ndarray of int64
        A gSDE layout (``layout[2] == 3``).
    w : ndarray of float64, 1-D
        Workspace; ``w[sq:sq + latent_dim * action_dim]`` is written, row-major like
        ``log_std``.
    sq : int
        Offset (``work_size - 2 * block * max_width - latent_dim * action_dim``).
    """
    ls_off = layout[L_LOG_STD]
    n_ls = layout[L_N_PARAMS] - ls_off
    for j in range(n_ls):
        w[sq + j] = math.exp(2.0 * theta[ls_off + j])


_sde_std_sq_jit = numba.njit(cache=True, nogil=True)(_sde_std_sq)


def _sde_var(w, sq, lat, lat_off, n_lat, k_out, k):
    """gSDE variance ``sigma_k**2 = sum_j h_j**2 std_jk**2 + 1e-6`` of one sample.

    Parameters
    ----------
    w : ndarray of float64, 1-D
        Workspace with ``std**2`` at ``w[sq:]`` (``_sde_std_sq``).
    sq : int
        Its offset.
    lat : ndarray of float64, 1-D
        Holds the sample's latent ``h`` at ``lat[lat_off:lat_off + n_lat]``.
    lat_off, n_lat, k_out, k : int
        Offset and size of ``h``, action dimension, action coordinate.

    Returns
    -------
    float
        SB3 ``th.mm(latent_sde**2, std**2)[k] + epsilon`` (``sigma_k = sqrt`` of it).
    """
    var = 0.0
    for j in range(n_lat):
        hj = lat[lat_off + j]
        var += hj * hj * w[sq + j * k_out + k]
    return var + SDE_EPSILON


_sde_var_jit = numba.njit(cache=True, nogil=True)(_sde_var)


def _sde_head_grad(
    layout, w, hs, ds, sq, lat, lat_off, a_row, adv, ent_coef, scale, g
):
    """Log-prob, entropy and gradients of one sample, gSDE Gaussian head.

    Parameters
    ----------
    layout : ndarray of int64
        A gSDE layout (``layout[2] == 3``).
    w : ndarray of float64, 1-D
        Workspace: mean ``mu`` at ``w[hs:hs + action_dim]``; ``dL/dmu`` is written at
        ``w[ds:ds + action_dim]``; ``std**2`` at ``w[sq:]`` (``_sde_std_sq``).
    hs, ds, sq : int
        Offsets.
    lat : ndarray of float64, 1-D
        Holds the latent ``h`` at ``lat[lat_off:lat_off + latent_dim]``.
    lat_off : int
        Its offset.
    a_row : ndarray of float64, shape (action_dim,)
        The action ``a``.
    adv, ent_coef, scale : float
        ``A_t``, ``ent_coef`` and ``1 / n``.
    g : ndarray of float64, shape (n_params,)
        Gradient accumulator; ``dL/dlog_std`` is added to it.

    Returns
    -------
    logp, ent : float
        ``sum_k log N(a_k; mu_k, sigma_k)`` and ``sum_k (0.5 + 0.5 log(2 pi) + log
        sigma_k)``.

    Notes
    -----
    With ``v_k = sigma_k**2``: ``dL/dmu_k = scale (-A (a_k - mu_k) / v_k)``, ``dL/dv_k
    = scale (-A ((a_k - mu_k)**2 / v_k - 1) - ent_coef) / (2 v_k)`` and
    ``dL/dlog_std_jk = dL/dv_k * 2 h_j**2 std_jk**2``. ``h`` is a constant in ``v``
    (SB3 ``learn_features=False`` detaches it): no gradient reaches the hidden layers
    through ``sigma``.
    """
    k_out = layout[L_N_OUT]
    ls_off = layout[L_LOG_STD]
    n_lat = layout[HEADER + REC * (layout[L_N_PI] - 1) + 2]
    logp = 0.0
    ent = 0.0
    for k in range(k_out):
        var = _sde_var_jit(w, sq, lat, lat_off, n_lat, k_out, k)
        inv_var = 1.0 / var
        half_log_var = 0.5 * math.log(var)
        diff = a_row[k] - w[hs + k]
        logp += -0.5 * diff * diff * inv_var - half_log_var - HALF_LOG_2PI
        ent += 0.5 + HALF_LOG_2PI + half_log_var
        w[ds + k] = scale * (-adv * diff * inv_var)
        dv = scale * 0.5 * inv_var * (-adv * (diff * diff * inv_var - 1.0) - ent_coef)
        for j in range(n_lat):
            hj = lat[lat_off + j]
            g[ls_off + j * k_out + k] += 2.0 * dv * hj * hj * w[sq + j * k_out + k]
    return logp, ent


# error_model="numpy": v_k >= 1e-6, so the divisions never raise; no ZeroDivisionError
# branch (as in the layer kernels).
_sde_head_grad_jit = numba.njit(cache=True, nogil=True, error_model="numpy")(
    _sde_head_grad
)


def _block_loss_grad(
    theta,
    layout,
    x,
    actions,
    advantages,
    returns,
    i0,
    m,
    ent_coef,
    vf_coef,
    scale,
    w,
    g,
):
    """Add ``scale *`` the A2C loss gradient of samples ``i0..i0+m-1`` to ``g``.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
    layout : ndarray of int64
    x : ndarray of float64, shape (n * obs_dim,)
        Flattened observations ``s_t`` of the whole batch.
    actions : ndarray of float64, shape (n, action_cols)
        Actions ``a_t`` (index in column 0 if discrete, group ``g``'s index in column
        ``g`` if multi-categorical).
    advantages, returns : ndarray of float64, shape (n,)
        ``A_t`` and ``R_t`` (constants: no gradient flows into them).
    i0, m : int
        First sample and block size (``<= layout[11]``).
    ent_coef, vf_coef : float
        Loss coefficients.
    scale : float
        ``1 / n`` (the loss is a batch mean).
    w : ndarray of float64, shape (work_size,)
        Workspace.
    g : ndarray of float64, shape (n_params,)
        Gradient accumulator.

    Returns
    -------
    sum_neg_logp_adv, sum_entropy, sum_sq_err : float
        Block sums of ``-log pi(a_t|s_t) A_t``, ``H(pi(.|s_t))``, ``(R_t - V(s_t))**2``.

    Notes
    -----
    Equivalent to ``g += scale * grad_theta sum_t [-A_t log pi(a_t|s_t)
    - ent_coef H(pi(.|s_t)) + vf_coef (R_t - V(s_t))**2]``. Head gradients:
    Categorical with logits ``z``, ``p = softmax(z)``: ``dL/dz_k = -A (1[k=a] - p_k)
    + ent_coef p_k (log p_k + H)``; Gaussian with mean ``mu``, ``sigma =
    exp(log_std)``: ``dL/dmu = -A (a - mu) / sigma**2``, ``dL/dlog_std = -A ((a -
    mu)**2 / sigma**2 - 1) - ent_coef``; multi-categorical: the Categorical formula
    per group (``_multi_cat_head_grad``); gSDE: ``_sde_head_grad`` (the latent ``h``
    detached in ``sigma``); value: ``dL/dV = -2 vf_coef (R - V)``.
    """
    n_pi = layout[L_N_PI]
    k_out = layout[L_N_OUT]
    blk = layout[L_BLOCK]
    d0 = layout[L_WORK_SIZE] - 2 * blk * layout[L_MAX_WIDTH]
    d1 = d0 + blk * layout[L_MAX_WIDTH]
    x_off = i0 * layout[L_OBS_DIM]
    head = _mlp_forward_jit(theta, layout, 0, n_pi, x, x_off, m, w)
    vhead = _mlp_forward_jit(theta, layout, n_pi, layout[L_N_VF], x, x_off, m, w)
    kind = layout[L_CONTINUOUS]
    # gSDE: std**2 once per block, and where the latents h (action_net's inputs) are.
    sq = 0
    lat = x
    lat_off = x_off
    n_lat = layout[HEADER + REC * (n_pi - 1) + 2]
    if kind == HEAD_SDE:
        sq = d0 - layout[L_N_PARAMS] + layout[L_LOG_STD]
        _sde_std_sq_jit(theta, layout, w, sq)
        if n_pi > 1:
            lat = w
            lat_off = blk * layout[HEADER + REC * (n_pi - 2) + 4]
    s_pl = 0.0
    s_ent = 0.0
    s_vl = 0.0
    for s in range(m):
        adv = advantages[i0 + s]
        a_row = actions[i0 + s]
        hs = head + s * k_out
        ds = d0 + s * k_out
        logp = 0.0
        ent = 0.0
        if kind == HEAD_GAUSSIAN:
            ls_off = layout[L_LOG_STD]
            for k in range(k_out):
                log_std = theta[ls_off + k]
                inv_var = math.exp(-2.0 * log_std)
                diff = a_row[k] - w[hs + k]
                logp += -0.5 * diff * diff * inv_var - log_std - HALF_LOG_2PI
                ent += 0.5 + HALF_LOG_2PI + log_std
                w[ds + k] = scale * (-adv * diff * inv_var)
                # log_std is a leaf parameter: its gradient goes straight into g.
                g[ls_off + k] += scale * (
                    -adv * (diff * diff * inv_var - 1.0) - ent_coef
                )
        elif kind == HEAD_CATEGORICAL:
            a = int(a_row[0])
            lse = _logsumexp_jit(w, hs, k_out)
            for k in range(k_out):
                lp = w[hs + k] - lse
                ent -= math.exp(lp) * lp
            logp = w[hs + a] - lse
            for k in range(k_out):
                lp = w[hs + k] - lse
                p = math.exp(lp)
                ind = 1.0 if k == a else 0.0
                w[ds + k] = scale * (-adv * (ind - p) + ent_coef * p * (lp + ent))
        elif kind == HEAD_MULTI_CATEGORICAL:
            logp, ent = _multi_cat_head_grad_jit(
                layout, w, hs, ds, a_row, adv, ent_coef, scale
            )
        else:
            logp, ent = _sde_head_grad_jit(
                layout, w, hs, ds, sq, lat, lat_off + s * n_lat, a_row, adv,
                ent_coef, scale, g,
            )
        s_pl -= logp * adv
        s_ent += ent
    _mlp_backward_jit(theta, layout, 0, n_pi, x, x_off, m, w, d0, d1, g)
    for s in range(m):
        err = returns[i0 + s] - w[vhead + s]
        s_vl += err * err
        w[d0 + s] = scale * (-2.0 * vf_coef * err)
    _mlp_backward_jit(theta, layout, n_pi, layout[L_N_VF], x, x_off, m, w, d0, d1, g)
    return s_pl, s_ent, s_vl


_block_loss_grad_jit = numba.njit(cache=True, nogil=True)(_block_loss_grad)


def _head_log_prob(theta, layout, w, hs, a_row, lat, lat_off, sq):
    """Log-density of an action under one sample's policy head.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
        Parameters (for ``log_std``).
    layout : ndarray of int64
    w : ndarray of float64, 1-D
        Workspace with the head output (logits or mean) at ``w[hs:hs + n_act_outputs]``
        and, gSDE only, ``std**2`` at ``w[sq:]`` (``_sde_std_sq``).
    hs : int
        Offset of the head output.
    a_row : ndarray of float64, shape (action_cols,)
        The action ``a``.
    lat : ndarray of float64, 1-D
        gSDE only: holds the latent ``h`` at ``lat[lat_off:lat_off + latent_dim]``.
    lat_off, sq : int
        gSDE only: offsets of ``h`` and of ``std**2``.

    Returns
    -------
    float
        ``log pi(a|s)``: ``logits[a] - logsumexp(logits)`` (Categorical), its sum over
        the groups (multi-categorical) or the diagonal Gaussian log-density summed over
        dimensions, ``sigma = exp(log_std)`` or gSDE's (SB3 ``Distribution.log_prob``).
    """
    k_out = layout[L_N_OUT]
    kind = layout[L_CONTINUOUS]
    logp = 0.0
    if kind == HEAD_GAUSSIAN:
        ls_off = layout[L_LOG_STD]
        for k in range(k_out):
            log_std = theta[ls_off + k]
            diff = a_row[k] - w[hs + k]
            logp += -0.5 * diff * diff * math.exp(-2.0 * log_std)
            logp -= log_std + HALF_LOG_2PI
    elif kind == HEAD_CATEGORICAL:
        logp = w[hs + int(a_row[0])] - _logsumexp_jit(w, hs, k_out)
    elif kind == HEAD_SDE:
        n_lat = layout[HEADER + REC * (layout[L_N_PI] - 1) + 2]
        for k in range(k_out):
            var = _sde_var_jit(w, sq, lat, lat_off, n_lat, k_out, k)
            diff = a_row[k] - w[hs + k]
            logp += -0.5 * diff * diff / var - 0.5 * math.log(var) - HALF_LOG_2PI
    else:
        gbase = HEADER + REC * (layout[L_N_PI] + layout[L_N_VF])
        off = hs
        for gi in range(layout[L_ACTION_COLS]):
            ng = layout[gbase + gi]
            logp += w[off + int(a_row[gi])] - _logsumexp_jit(w, off, ng)
            off += ng
    return logp


# Inlined in numba's IR (as _sample_action_jit): a call per sample with the gSDE
# latent's array among the arguments made policy_act_value on 8 CartPole samples ~4%
# slower than the Categorical/Gaussian-only functions LLVM inlined by itself.
_head_log_prob_jit = numba.njit(cache=True, nogil=True, inline="always")(
    _head_log_prob
)


def _categorical_draw(w, off, k_out, deterministic, u):
    """Index drawn from the Categorical with logits ``w[off:off + k_out]``.

    Parameters
    ----------
    w : ndarray of float64, 1-D
        Buffer holding the logits.
    off, k_out : int
        Offset and count.
    deterministic : bool
        Return the arg max (first one on ties) instead of a draw.
    u : float
        A uniform on [0, 1).

    Returns
    -------
    int
        Inverse CDF at ``u``: ``searchsorted(cumsum(softmax(logits)), u,
        side="right")``, capped at ``k_out - 1`` (rounding of the cumulative sum).
    """
    best = 0
    if deterministic:
        for k in range(1, k_out):
            if w[off + k] > w[off + best]:
                best = k
    else:
        lse = _logsumexp_jit(w, off, k_out)
        c = 0.0
        best = k_out - 1
        for k in range(k_out):
            c += math.exp(w[off + k] - lse)
            if u < c:
                best = k
                break
    return best


_categorical_draw_jit = numba.njit(cache=True, nogil=True)(_categorical_draw)


def _sample_action(
    theta, layout, w, hs, deterministic, noise_row, a_row, lat, lat_off
):
    """Write an action drawn from one sample's policy head ``w[hs:]`` into ``a_row``.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
        Parameters (for ``log_std``).
    layout : ndarray of int64
    w : ndarray of float64, 1-D
        Workspace with the head output at ``w[hs:hs + n_act_outputs]``.
    hs : int
        Offset of the head output.
    deterministic : bool
        Take the mode (arg max, per group if multi-categorical; ``mu``) instead of a
        draw.
    noise_row : ndarray of float64, shape (noise_cols(layout),)
        A uniform on [0, 1) (Discrete), one per group (multi-categorical), standard
        normals (Box) or the row-major flattened exploration matrix ``E`` of shape
        ``(latent_dim, action_dim)`` (gSDE). Not read when ``deterministic``.
    a_row : ndarray of float64, shape (action_cols,)
        Written.
    lat : ndarray of float64, 1-D
        gSDE only: holds the latent ``h`` at ``lat[lat_off:lat_off + latent_dim]``.
    lat_off : int
        gSDE only: offset of ``h``.

    Notes
    -----
    Categorical: inverse CDF at the uniform ``noise_row[0]`` (``_categorical_draw``),
    multi-categorical: the same for group ``g`` at ``noise_row[g]``; Gaussian: ``mu +
    exp(log_std) * noise_row`` with standard normals; gSDE: ``mu + h @ E`` (SB3
    ``StateDependentNoiseDistribution.sample`` with ``get_noise``). Equivalent to
    SB3's ``Distribution.get_actions(deterministic)`` with the randomness supplied by
    the caller.
    """
    k_out = layout[L_N_OUT]
    kind = layout[L_CONTINUOUS]
    if kind == HEAD_GAUSSIAN:
        ls_off = layout[L_LOG_STD]
        for k in range(k_out):
            a_row[k] = w[hs + k]
            if not deterministic:
                a_row[k] += math.exp(theta[ls_off + k]) * noise_row[k]
    elif kind == HEAD_SDE:
        n_lat = layout[HEADER + REC * (layout[L_N_PI] - 1) + 2]
        for k in range(k_out):
            noise = 0.0
            if not deterministic:
                for j in range(n_lat):
                    noise += lat[lat_off + j] * noise_row[j * k_out + k]
            a_row[k] = w[hs + k] + noise
    elif kind == HEAD_CATEGORICAL:
        u = 0.0 if deterministic else noise_row[0]
        a_row[0] = _categorical_draw_jit(w, hs, k_out, deterministic, u)
    else:
        gbase = HEADER + REC * (layout[L_N_PI] + layout[L_N_VF])
        off = hs
        for gi in range(layout[L_ACTION_COLS]):
            ng = layout[gbase + gi]
            u = 0.0 if deterministic else noise_row[gi]
            a_row[gi] = _categorical_draw_jit(w, off, ng, deterministic, u)
            off += ng


_sample_action_jit = numba.njit(cache=True, nogil=True, inline="always")(
    _sample_action
)


def _predict_values(theta, layout, obs, out_values):
    """Values ``V(s)`` for a batch (the value net only).

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
    layout : ndarray of int64
    obs : ndarray of float64, shape (n, obs_dim)
    out_values : ndarray of float64, shape (n,)
        Written.

    Notes
    -----
    Equivalent to ``vf_net(obs)[:, 0]`` (SB3 ``policy.predict_values``); used for the
    bootstrap values ``V(s_T)`` and ``V(final_observation)`` of truncated episodes.
    """
    w = np.empty(layout[L_WORK_SIZE])
    x = obs.reshape(-1)
    n = obs.shape[0]
    blk = layout[L_BLOCK]
    obs_dim = layout[L_OBS_DIM]
    for i0 in range(0, n, blk):
        m = min(blk, n - i0)
        vhead = _mlp_forward_jit(
            theta, layout, layout[L_N_PI], layout[L_N_VF], x, i0 * obs_dim, m, w
        )
        for s in range(m):
            out_values[i0 + s] = w[vhead + s]


predict_values = numba.njit(
    f"void({_F1}, {_I1}, {_F2}, {_F1})", cache=True, nogil=True
)(_predict_values)


def _policy_act_value(
    theta,
    layout,
    obs,
    deterministic,
    noise,
    out_actions,
    out_values,
    out_log_probs,
    with_value,
):
    """Shared body of :func:`policy_act` and :func:`policy_act_value`.

    Parameters
    ----------
    theta, layout, obs, deterministic, noise, out_actions, out_values, out_log_probs
        As in :func:`policy_act_value`; ``out_values``/``out_log_probs`` are untouched
        when ``with_value`` is false (pass empty arrays).
    with_value : bool
        Also compute ``V(s)`` and ``log pi(a|s)``.

    Raises
    ------
    ValueError
        If ``noise`` has fewer than ``n`` rows or ``noise_cols(layout)`` columns and
        ``deterministic`` is false.

    Notes
    -----
    Equivalent to ``policy_act`` followed (if ``with_value``) by ``predict_values`` and
    the log-density of the drawn actions.
    """
    w = np.empty(layout[L_WORK_SIZE])
    x = obs.reshape(-1)
    n = obs.shape[0]
    blk = layout[L_BLOCK]
    n_pi = layout[L_N_PI]
    k_out = layout[L_N_OUT]
    obs_dim = layout[L_OBS_DIM]
    kind = layout[L_CONTINUOUS]
    # gSDE: where the latents h are, and std**2 (for the log-densities).
    n_lat = layout[HEADER + REC * (n_pi - 1) + 2]
    lat = x
    lat_base = 0
    sq = 0
    if kind == HEAD_SDE:
        if n_pi > 1:
            lat = w
            lat_base = blk * layout[HEADER + REC * (n_pi - 2) + 4]
        sq = (
            layout[L_WORK_SIZE]
            - 2 * blk * layout[L_MAX_WIDTH]
            - layout[L_N_PARAMS]
            + layout[L_LOG_STD]
        )
        if with_value:
            _sde_std_sq_jit(theta, layout, w, sq)
    if not deterministic:
        cols = 1
        if kind == HEAD_MULTI_CATEGORICAL:
            cols = layout[L_ACTION_COLS]
        elif kind == HEAD_GAUSSIAN:
            cols = k_out
        elif kind == HEAD_SDE:
            cols = n_lat * k_out
        if noise.shape[0] < n or noise.shape[1] < cols:
            raise ValueError("noise needs shape (n, noise_cols(layout))")
    for i0 in range(0, n, blk):
        m = min(blk, n - i0)
        head = _mlp_forward_jit(theta, layout, 0, n_pi, x, i0 * obs_dim, m, w)
        # Latent of sample s at lat_s + s * n_lat (the observations when n_pi == 1).
        lat_s = lat_base if n_pi > 1 else i0 * obs_dim
        for s in range(m):
            i = i0 + s
            hs = head + s * k_out
            ls = lat_s + s * n_lat
            _sample_action_jit(
                theta, layout, w, hs, deterministic, noise[i], out_actions[i], lat, ls
            )
            if with_value:
                out_log_probs[i] = _head_log_prob_jit(
                    theta, layout, w, hs, out_actions[i], lat, ls, sq
                )
        if with_value:
            vhead = _mlp_forward_jit(
                theta, layout, n_pi, layout[L_N_VF], x, i0 * obs_dim, m, w
            )
            for s in range(m):
                out_values[i0 + s] = w[vhead + s]


_policy_act_value_jit = numba.njit(cache=True, nogil=True)(_policy_act_value)


def _policy_act(theta, layout, obs, deterministic, noise, out_actions):
    """Draw actions ``a ~ pi(.|s)`` for a batch with caller-supplied randomness.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
    layout : ndarray of int64
    obs : ndarray of float64, shape (n, obs_dim)
    deterministic : bool
        Mode of the distribution (arg max / mean) instead of a draw.
    noise : ndarray of float64, shape (n, noise_cols(layout))
        The randomness, ignored when ``deterministic``: a uniform on [0, 1) (Discrete,
        ``rng.random((n, 1))``), one uniform per group (multi-categorical,
        ``rng.random((n, G))``), standard normals (Box, ``rng.standard_normal((n,
        d))``) or, with gSDE, row ``i`` the row-major flattened exploration matrix
        ``E_i`` of shape ``(latent_dim, d)`` used for sample ``i``
        (:func:`sample_exploration`). Supplying it keeps the kernel deterministic
        (docs/design.rst, "Randomness"). Extra columns are ignored.
    out_actions : ndarray of float64, shape (n, action_cols)
        Written: action index as float (Discrete), one index per group
        (multi-categorical) or unclipped Gaussian sample (Box; the caller clips to the
        action space as SB3 does, the log-prob uses this value).

    Raises
    ------
    ValueError
        If ``noise`` is too small and ``deterministic`` is false.

    Notes
    -----
    Equivalent to ``searchsorted(cumsum(softmax(logits)), u, side="right")`` per row
    (Discrete) and per group (multi-categorical), ``mu + exp(log_std) * noise`` (Box)
    or ``mu + h @ E_i`` with the latent ``h`` (gSDE, SB3
    ``StateDependentNoiseDistribution.sample``); the mode is the arg max per group or
    ``mu``.
    """
    empty = np.empty(0)
    _policy_act_value_jit(
        theta, layout, obs, deterministic, noise, out_actions, empty, empty, False
    )


policy_act = numba.njit(
    f"void({_F1}, {_I1}, {_F2}, boolean, {_F2}, {_F2})", cache=True, nogil=True
)(_policy_act)


def _policy_act_value_public(
    theta, layout, obs, deterministic, noise, out_actions, out_values, out_log_probs
):
    """``policy_act`` plus ``V(s)`` and ``log pi(a|s)``, as SB3's ``policy.forward``.

    Parameters
    ----------
    theta, layout, obs, deterministic, noise, out_actions
        As in :func:`policy_act`.
    out_values : ndarray of float64, shape (n,)
        Written: ``V(s)`` (the rollout's ``values``).
    out_log_probs : ndarray of float64, shape (n,)
        Written: ``log pi(a|s)`` of the returned actions.

    Notes
    -----
    Equivalent to ``policy_act`` followed by ``predict_values`` and the log-density of
    the drawn actions, in one pass over the batch.
    """
    _policy_act_value_jit(
        theta, layout, obs, deterministic, noise, out_actions, out_values,
        out_log_probs, True,
    )


policy_act_value = numba.njit(
    f"void({_F1}, {_I1}, {_F2}, boolean, {_F2}, {_F2}, {_F1}, {_F1})",
    cache=True,
    nogil=True,
)(_policy_act_value_public)


def _a2c_loss_grad(
    theta,
    layout,
    obs,
    actions,
    advantages,
    returns,
    ent_coef,
    vf_coef,
    grad_out,
    losses_out,
    grad_slabs,
    work,
):
    """A2C loss of a batch and its gradient with respect to ``theta``.

    Parameters
    ----------
    theta : ndarray of float64, shape (n_params,)
        Parameters ``v`` (read only).
    layout : ndarray of int64
        ``np.asarray(make_layout(...), np.int64)``.
    obs : ndarray of float64, shape (n, obs_dim)
        Observations ``s_t`` of the rollout, ``n >= 1``.
    actions : ndarray of float64, shape (n, action_cols)
        Actions ``a_t`` (index in column 0 if discrete, group ``g``'s index in column
        ``g`` if multi-categorical).
    advantages : ndarray of float64, shape (n,)
        ``A_t`` (e.g. from ``a2c.compute_returns_and_advantages``; normalise them
        beforehand if wanted).
    returns : ndarray of float64, shape (n,)
        Value targets ``R_t``.
    ent_coef, vf_coef : float
        ``ent_coef`` and ``vf_coef`` (SB3 A2C defaults 0.0 and 0.5).
    grad_out : ndarray of float64, shape (n_params,)
        Overwritten with ``dL/dtheta``.
    losses_out : ndarray of float64, shape (3,)
        Overwritten with SB3's logged terms ``policy_loss``, ``entropy_loss``,
        ``value_loss``.
    grad_slabs : ndarray of float64, shape (n_chunks, n_params)
        Per-chunk gradient slabs (contents ignored); from :func:`make_grad_workspace`.
    work : ndarray of float64, shape (n_chunks, work_size)
        Per-chunk activation workspace.

    Returns
    -------
    loss : float
        ``policy_loss + ent_coef * entropy_loss + vf_coef * value_loss``.

    Notes
    -----
    Equivalent to SB3's ``A2C.train`` loss (``tests/_naive_a2c.py::a2c_loss``)::

        policy_loss  = -(advantages * log_prob).mean()
        entropy_loss = -entropy.mean()
        value_loss   = ((returns - values) ** 2).mean()
        loss = policy_loss + ent_coef * entropy_loss + vf_coef * value_loss

    and ``grad_out = dloss/dtheta``. The batch is cut into ``n_chunks`` contiguous
    chunks ``[c n // n_chunks, (c + 1) n // n_chunks)``; chunk ``c`` accumulates into
    ``grad_slabs[c]`` (in blocks of ``layout[11]`` samples) and the slabs are summed in
    chunk order after the loop.

    Race semantics: race-free: thread-private buffers, reduced after the loop. In the
    ``parallel=True`` variant the ``prange`` over chunks gives each chunk its own slab,
    workspace row and loss slot, and the reduction is a second ``prange`` over
    parameters. The result depends on ``n_chunks`` (summation order) but not on the
    thread count or schedule, so serial and parallel variants with the same workspace
    are bit-identical. Hogwild writes are deliberately not used here: A2C clips the
    *global* gradient norm (``max_grad_norm``) before the step, which needs the whole
    batch gradient, and racy ``+=`` loses increments (numba issue #7133;
    docs/design.rst, "Race-free sums"). The lock-free level of HSA2C is in how workers
    apply pushed deltas.
    """
    n = obs.shape[0]
    x = obs.reshape(-1)
    n_chunks = grad_slabs.shape[0]
    n_par = layout[L_N_PARAMS]
    blk = layout[L_BLOCK]
    scale = 1.0 / n
    chunk_sums = np.zeros((n_chunks, 3))
    for c in prange(n_chunks):
        g = grad_slabs[c]
        w = work[c]
        for j in range(n_par):
            g[j] = 0.0
        lo = c * n // n_chunks
        hi = (c + 1) * n // n_chunks
        for i0 in range(lo, hi, blk):
            pl, ent, vl = _block_loss_grad_jit(
                theta,
                layout,
                x,
                actions,
                advantages,
                returns,
                i0,
                min(blk, hi - i0),
                ent_coef,
                vf_coef,
                scale,
                w,
                g,
            )
            chunk_sums[c, 0] += pl
            chunk_sums[c, 1] += ent
            chunk_sums[c, 2] += vl
    # Reduce slabs in fixed chunk order (deterministic); each j is written once.
    for j in prange(n_par):
        s = 0.0
        for c in range(n_chunks):
            s += grad_slabs[c, j]
        grad_out[j] = s
    s_pl = 0.0
    s_ent = 0.0
    s_vl = 0.0
    for c in range(n_chunks):
        s_pl += chunk_sums[c, 0]
        s_ent += chunk_sums[c, 1]
        s_vl += chunk_sums[c, 2]
    losses_out[0] = s_pl * scale
    losses_out[1] = -s_ent * scale
    losses_out[2] = s_vl * scale
    return losses_out[0] + ent_coef * losses_out[1] + vf_coef * losses_out[2]


_A2C_SIG = (
    f"float64({_F1}, {_I1}, {_F2}, {_F2}, {_F1}, {_F1}, float64, float64, "
    f"{_F1}, {_F1}, {_F2}, {_F2})"
)


a2c_loss_grad = numba.njit(_A2C_SIG, cache=True, nogil=True)(_a2c_loss_grad)
a2c_loss_grad_parallel = numba.njit(_A2C_SIG, cache=True, nogil=True, parallel=True)(
    parallel_twin(_a2c_loss_grad)
)


def select_a2c_loss_grad(parallel: bool):
    """Choose the serial or the ``parallel=True`` A2C gradient kernel.

    Parameters
    ----------
    parallel : bool
        Spread the batch chunks over numba's threads.

    Returns
    -------
    numba dispatcher
        :func:`a2c_loss_grad_parallel` if ``parallel`` else :func:`a2c_loss_grad`.
        Both take the same arguments and, given the same workspace, return
        bit-identical results.
    """
    return a2c_loss_grad_parallel if parallel else a2c_loss_grad
